"""Running git: the one place crewtui calls the `git` program, and how its failures become one line.

git itself is the kept tool for worktrees, merges and diffs (a library such as dulwich has no worktrees and no
three-way merge of its own that matches git's). Every call runs `git -C DIR ...` with an argv (never a shell),
no pager, no prompt for credentials, the C locale (so its messages can be read), and crewtui's identity for the
commits the runtime makes (an agent's own commits keep theirs). The repository's hooks and its fsmonitor never run
in the runtime's own git: a user's `post-checkout` or `commit-msg` is for the user's git, and code of theirs that
hangs, fails or rewrites a message must not hang, fail or change a merge (an agent's own git in its worktree
runs them, as any git there does).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from crewtui.errors import BadInput

GIT_TIMEOUT = 600.0  # a merge or a worktree of a big repository takes a while; a hung git does not hang us
IDENTITY = ("-c", "user.name=crewtui", "-c", "user.email=crewtui@localhost", "-c", "commit.gpgsign=false")
# No hooks, no fsmonitor (see above); paths with letters beyond ASCII as they are ("café.md", not
# "caf\303\251.md"), control characters still quoted by git ("\033[31m"), so a name never acts on a terminal.
SETTINGS = ("-c", f"core.hooksPath={os.devnull}", "-c", "core.fsmonitor=false", "-c", "core.quotePath=false")


class GitError(BadInput):
    """A git command failed: its first line of stderr (or how it failed)."""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # no GIT_DIR from an outer git
    env.update({"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "GIT_OPTIONAL_LOCKS": "0"})
    return env


def git(
    cwd: Path, *args: str, check: bool = True, identity: bool = False, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`git -C cwd args…`; raises GitError naming the command and git's own first line when it fails."""
    argv = ["git", *SETTINGS, *(IDENTITY if identity else ()), "-C", str(cwd), *args]
    try:
        p = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=_env(),
            timeout=GIT_TIMEOUT,
            input=input_text,
            stdin=None if input_text is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise GitError("git is not installed (workspaces need it): apt install git") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args[:2])} took over {GIT_TIMEOUT:g}s in {cwd}") from None
    if check and p.returncode != 0:
        raise GitError(f"git {' '.join(args[:2])} in {cwd}: {first_line(p.stderr or p.stdout)}")
    return p


def text_upto(cwd: Path, *args: str, limit: int) -> tuple[str, bool]:
    """`git -C cwd args…`'s stdout, at most `limit` bytes (cut at a line's end), and whether it was cut: git's
    output is read as it comes and git stopped there, so a diff of a gigabyte never sits in memory."""
    argv = ["git", *SETTINGS, "-C", str(cwd), *args]
    with tempfile.TemporaryFile() as errors:
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, env=_env())
        except FileNotFoundError:
            raise GitError("git is not installed (workspaces need it): apt install git") from None
        assert p.stdout is not None
        with p:
            data = p.stdout.read(limit + 1)
            cut = len(data) > limit
            if cut:
                p.kill()
                data = data[: data.rfind(b"\n", 0, limit) + 1]
        if not cut and p.returncode != 0:
            errors.seek(0)
            said = errors.read().decode("utf-8", errors="replace")
            raise GitError(f"git {' '.join(args[:2])} in {cwd}: {first_line(said)}")
    return data.decode("utf-8", errors="replace"), cut


def first_line(text: str) -> str:
    """git's reason: its first `fatal:` or `error:` line (progress such as "Preparing worktree" comes before it),
    else its first line."""
    said = [line.strip() for line in text.splitlines() if line.strip()]
    for line in said:
        if line.startswith(("fatal: ", "error: ")):
            return line.removeprefix("fatal: ").removeprefix("error: ")[:300]
    return said[0][:300] if said else "failed"


def out(cwd: Path, *args: str) -> str:
    """A git command's stdout, stripped."""
    return git(cwd, *args).stdout.strip()


def lines(cwd: Path, *args: str) -> list[str]:
    return [line for line in git(cwd, *args).stdout.splitlines() if line]


def rev(cwd: Path, ref: str) -> str | None:
    """The commit `ref` names, or None."""
    p = git(cwd, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return p.stdout.strip() or None if p.returncode == 0 else None


def argv_text(argv: Sequence[str]) -> str:
    return " ".join(argv)


@contextlib.contextmanager
def repo_lock(repo: Path, name: str) -> Iterator[None]:
    """An flock on `crewtui-NAME.lock` in the repository's common git dir (blocking): whoever holds it, in this
    runtime or another, goes alone. "merge": one merge at a time; "worktrees": adding, removing and listing
    worktrees (git cannot read a worktree that another git is adding at that moment)."""
    common = Path(out(repo, "rev-parse", "--git-common-dir"))
    if not common.is_absolute():
        common = repo / common
    with open(common / f"crewtui-{name}.lock", "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
