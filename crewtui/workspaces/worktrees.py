"""A session's workspace: its own git worktree on branch `crew/<label>`, made from the base branch by the runtime,
and what it changed there.

- `create`: the worktree (reused when the branch and the directory already exist: a retry, a restart), the
  files the crew copies in from the repository's checkout (`.env`), and the commit it started from;
- `commit_all`: an agent that never commits still delivers: what it left uncommitted is committed on its branch
  by the runtime, naming the session (only there: never on a branch the agent switched to, never in a repository
  around a worktree whose `.git` is gone, never the files the crew copied in);
- `changes` / `diff`: what its branch changed against the commit it started from (not against the base branch
  as it is now, which other merges move).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crewtui.errors import BadInput
from crewtui.workspaces.git import git, lines, out, repo_lock, rev, text_upto

BRANCH_PREFIX = "crew/"
DIFF_LIMIT = 6 << 20  # bytes of a diff shown (escaped in JSON, a control character takes 6: still under a reply)
FILES_KEPT = 1000  # files listed in a session's `changes` (all are counted)
LOCK_GRACE_S = 2.0  # an index lock in an ended session's worktree older than this is a dead git's


def branch_for(label: str) -> str:
    return BRANCH_PREFIX + label


def check_new_branch(repo: Path, branch: str) -> None:
    """One line when a new session cannot have `branch` of its own: a label git cannot take as a branch name
    (`..`, a `.lock` or `.` at its end), or a branch of that name there already (the user's, another crew's, an
    earlier session's with its work): a new session never takes over a branch it did not make."""
    if git(repo, "check-ref-format", f"refs/heads/{branch}", check=False).returncode != 0:
        raise BadInput(f"{branch} is not a branch name git accepts (no '..', no '.lock' or '.' at the end)")
    if rev(repo, f"refs/heads/{branch}") is not None:
        raise BadInput(
            f"a branch {branch} already exists in {repo} (an earlier session's, or yours): use another label"
        )
    top = branch.split("/", 1)[0]
    if "/" in branch and rev(repo, f"refs/heads/{top}") is not None:
        raise BadInput(f"a branch {top} exists in {repo}: git cannot make {branch} beside it")
    under = lines(repo, "for-each-ref", "--count=1", "--format=%(refname:short)", f"refs/heads/{branch}/")
    if under:
        raise BadInput(f"a branch {under[0]} exists in {repo}: git cannot make {branch} beside it")


def repo_root(path: Path) -> Path:
    """The top of the git checkout `path` is in; one line when it is none."""
    if not path.is_dir():
        raise BadInput(f"{path} is not a directory (a workspace needs a git repository)")
    p = git(path, "rev-parse", "--show-toplevel", check=False)
    if p.returncode != 0 and git(path, "rev-parse", "--is-bare-repository", check=False).stdout.strip() == "true":
        raise BadInput(f"{path} is a bare repository: a workspace needs one with a checkout (clone it)")
    if p.returncode != 0 or not p.stdout.strip():
        raise BadInput(f"{path} is not a git repository")
    return Path(p.stdout.strip())


def current_branch(repo: Path) -> str:
    """The branch checked out in `repo` (the default base of `ctl spawn --repo`)."""
    p = git(repo, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if p.returncode != 0:
        raise BadInput(f"{repo} has no branch checked out (a detached HEAD): say which base to start from")
    return p.stdout.strip()


def base_commit(repo: Path, base: str) -> str:
    sha = rev(repo, f"refs/heads/{base}") or rev(repo, base)
    if sha is None:
        raise BadInput(f"no branch {base!r} in {repo}")
    return sha


def no_branch(repo: Path, name: str) -> bool:
    return rev(repo, f"refs/heads/{name}") is None


def _besides(copied: Sequence[str]) -> list[str]:
    """Pathspecs: the whole checkout but the files the crew copied in (`.env`: the user's, not the agent's work)."""
    return ["--", ".", *(f":(exclude,literal){name}" for name in copied)] if copied else []


def dirty_files(checkout: Path, copied: Sequence[str] = ()) -> list[str]:
    """Uncommitted changes (tracked or not) in a checkout, as git status names them; the crew's copied files aside."""
    args = ["status", "--porcelain", "--untracked-files=normal", *_besides(copied)]
    return [line[3:] for line in git(checkout, *args).stdout.splitlines()]


def create(repo: Path, base: str, branch: str, path: Path, copy: list[str]) -> str:
    """Make (or find again) the worktree at `path` on `branch`, from `base`; return the commit it starts from."""
    start = base_commit(repo, base)
    with repo_lock(repo, "worktrees"):
        if rev(repo, f"refs/heads/{branch}") is not None:
            if not (path / ".git").exists():  # the branch outlived its worktree: check it out again
                git(repo, "worktree", "prune")
                git(repo, "worktree", "add", str(path), branch)
            start = out(repo, "merge-base", start, f"refs/heads/{branch}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            git(repo, "worktree", "add", "-b", branch, str(path), start)
    for name in copy:
        _copy_in(repo, path, name)
    return start


def _copy_in(repo: Path, worktree: Path, name: str) -> None:
    """Copy a file of the repository's checkout to the same place in the worktree, never through a symlink in the
    worktree (a worktree is the agent's: on a retry, a `.env` it made a link to ~/.bashrc is replaced, not followed;
    a link in the way to it is refused)."""
    src = repo / name
    if not src.is_file():
        return
    dst = worktree / name
    for parent in reversed(dst.relative_to(worktree).parents[:-1]):
        if (worktree / parent).is_symlink():
            raise BadInput(f"workspace copy {name}: {parent} is a symlink in the worktree; not copied through it")
    if dst.is_symlink():
        dst.unlink()
    elif dst.is_dir():
        raise BadInput(f"workspace copy {name}: a directory is in its place in the worktree")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def verify_own(worktree: Path, branch: str) -> None:
    """One line unless `worktree` is a checkout of its own (not a directory inside another repository, its `.git`
    gone) on `branch` (an agent may have switched to another branch, or detached): what the runtime commits there
    goes on the session's branch, never on one it did not make."""
    top = git(worktree, "rev-parse", "--show-toplevel", check=False).stdout.strip()
    if not top or Path(top).resolve() != worktree.resolve():
        raise BadInput(f"{worktree} is no longer a git worktree (its .git is gone): nothing committed")
    head = git(worktree, "symbolic-ref", "--quiet", "HEAD", check=False).stdout.strip()
    if head != f"refs/heads/{branch}":
        now = head.removeprefix("refs/heads/") if head else "a detached HEAD"
        raise BadInput(f"its worktree is on {now}, not on {branch}: nothing committed (switch it back to merge it)")


def _clear_stale_lock(lock: Path) -> None:
    """The session has ended; a git of its own still finishing (a straggler) gets a moment, then its lock goes."""
    deadline = time.monotonic() + LOCK_GRACE_S
    while lock.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    lock.unlink(missing_ok=True)


def commit_all(worktree: Path, message: str, branch: str | None = None, copied: Sequence[str] = ()) -> bool:
    """Commit whatever is uncommitted in the worktree (new files too), but the files the crew copied in (a `.env`
    git does not ignore would go into the branch, then into the target); False when there was nothing. With
    `branch` (a session's end), only when the worktree is its own checkout on that branch (`verify_own`), and an
    index lock a killed agent's git left behind is removed first (else this commit, and the next attempt's git,
    would fail)."""
    if branch is not None:
        verify_own(worktree, branch)
        _clear_stale_lock(Path(out(worktree, "rev-parse", "--absolute-git-dir")) / "index.lock")
    git(worktree, "add", "--all", *_besides(copied))
    if git(worktree, "diff", "--cached", "--quiet", check=False).returncode == 0:
        return False
    git(worktree, "commit", "--quiet", "--no-verify", "-m", message, identity=True)
    return True


@dataclass
class Changes:
    """What a branch changed against the commit it started from. `files` lists at most FILES_KEPT of them (the
    biggest, in git's order), `files_total` counts them all: an agent that commits a `node_modules` of 100,000
    files must not put megabytes into its session's record, every listing and every event."""

    files: list[dict[str, Any]] = field(default_factory=list)  # {"path", "insertions", "deletions"} (-1: binary)
    insertions: int = 0
    deletions: int = 0
    commits: int = 0
    files_total: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "files_total": self.files_total,
            "insertions": self.insertions,
            "deletions": self.deletions,
            "commits": self.commits,
        }


def changes(repo: Path, start: str, branch: str, keep: int = FILES_KEPT) -> Changes:
    c = Changes()
    for line in lines(repo, "diff", "--numstat", "--no-renames", start, f"refs/heads/{branch}", "--"):
        added, deleted, path = line.split("\t", 2)
        ins = -1 if added == "-" else int(added)
        dels = -1 if deleted == "-" else int(deleted)
        c.files.append({"path": path, "insertions": ins, "deletions": dels})
        c.insertions += max(0, ins)
        c.deletions += max(0, dels)
    c.files_total = len(c.files)
    if len(c.files) > keep:
        size = {id(f): max(0, f["insertions"]) + max(0, f["deletions"]) for f in c.files}
        kept = {id(f) for f in sorted(c.files, key=lambda f: -size[id(f)])[:keep]}
        c.files = [f for f in c.files if id(f) in kept]
    c.commits = int(out(repo, "rev-list", "--count", f"{start}..refs/heads/{branch}") or 0)
    return c


def diff(repo: Path, start: str, branch: str, stat: bool = False, limit: int = DIFF_LIMIT) -> str:
    """The branch's diff against its start, cut at `limit` bytes, saying so (the control socket carries a reply
    of a few tens of MiB at most, and no one reviews more than this in one piece)."""
    # The prefixes said: a user's `diff.noprefix` or `diff.mnemonicPrefix` would change the headers readers split on.
    args = ["diff", "--no-color", "--no-ext-diff", "--src-prefix=a/", "--dst-prefix=b/"] + (["--stat"] if stat else [])
    text, cut = text_upto(repo, *args, start, f"refs/heads/{branch}", "--", limit=limit)
    if cut:
        text += f"… the diff is cut at {limit >> 20} MiB: git -C {repo} diff {start[:12]} {branch} shows all of it\n"
    return text


def unmerged_work(
    repo: Path, path: Path, branch: str | None, into: str | None, copied: Sequence[str] = ()
) -> str | None:
    """Why removing this worktree (and branch) would lose work, or None when it would not: uncommitted changes
    in it (the crew's copied files aside: copies), or commits on its branch that `into` does not have."""
    if (path / ".git").exists():
        dirty = dirty_files(path, copied)
        if dirty:
            return f"{len(dirty)} uncommitted change{'s' if len(dirty) != 1 else ''} in it"
    if branch is None or rev(repo, f"refs/heads/{branch}") is None:
        return None
    target = rev(repo, f"refs/heads/{into}") if into else None
    if target is None:
        return f"its branch {branch} has commits and no branch {into} to compare with"
    # Commits of the branch the target lacks: merged ones are its ancestors, replayed ones (a linear merge) have
    # their patch there ("-" in git cherry); "+" are work the target does not have.
    ahead = sum(1 for x in lines(repo, "cherry", target, f"refs/heads/{branch}") if x.startswith("+"))
    return f"{ahead} commit{'s' if ahead != 1 else ''} on {branch} not in {into}" if ahead else None


def remove(repo: Path, path: Path, branch: str | None) -> None:
    """Remove a worktree (and its branch, when named): what a merged or discarded session leaves."""
    with repo_lock(repo, "worktrees"):
        if (path / ".git").exists():
            git(repo, "worktree", "remove", "--force", str(path))
        else:
            git(repo, "worktree", "prune")
        if branch is not None and rev(repo, f"refs/heads/{branch}") is not None:
            git(repo, "branch", "-D", branch)
