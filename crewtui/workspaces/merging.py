"""One writer merges: a branch goes into its target in crewtui's own worktree, never in the user's checkout, and
the target branch moves in one step.

`merge_one` runs under the repository's merge lock (`lock`: an flock on a file in the repository's git dir, so
two crews, or two runtimes, on one repository take turns instead of guessing). In the merge worktree (a detached
checkout the runtime owns) it resets to the target's tip, merges the branch (`--no-ff`, a merge commit naming the
session) or replays its commits on the tip (`linear`), runs the `check` argv on the merged tree, and only then
moves the target with `git update-ref NEW OLD`: a compare-and-swap of one ref. A kill -9 anywhere before it leaves
the target where it was; after it, merged. Nothing is ever half there.

A conflict stops that branch only: its files are named, the merge worktree is reset, and the branch keeps its
own worktree. When the target is checked out somewhere (the user's checkout), moving its ref would leave that
checkout's files behind: the merge waits, saying where, unless the crew allows it and that checkout is clean,
and then the checkout itself is fast-forwarded (`merge --ff-only`).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from crewtui.errors import BadInput
from crewtui.workspaces import commands
from crewtui.workspaces.git import GitError, first_line, git, out, repo_lock, rev
from crewtui.workspaces.worktrees import dirty_files

# failed: git could not make the merge (no conflicting files: a full disk, a broken repository); the target has
# not moved, and `ctl merge` tries again.
Outcome = Literal["merged", "conflict", "check_failed", "failed", "waiting"]
CHECK_TIMEOUT = 1800.0
CHECK_TAIL = 2000  # characters of a failed check's output kept


@dataclass
class MergeResult:
    outcome: Outcome
    commit: str | None = None  # the target's new tip (merged)
    files: list[str] = field(default_factory=list)  # conflicting files
    note: str = ""


def lock(repo: Path) -> contextlib.AbstractContextManager[None]:
    """The repository's merge lock (blocking): one merge at a time, whoever runs it."""
    return repo_lock(repo, "merge")


def checked_out_at(repo: Path, branch: str, besides: Path) -> Path | None:
    """The worktree (the user's checkout, most likely) where `branch` is checked out, other than `besides`."""
    path: Path | None = None
    with repo_lock(repo, "worktrees"):
        listed = _worktree_list(repo)
    for line in listed:
        if line.startswith("worktree "):
            path = Path(line.removeprefix("worktree "))
        elif line == f"branch refs/heads/{branch}" and path is not None and path.resolve() != besides.resolve():
            return path
    return None


def _worktree_list(repo: Path, tries: int = 5) -> list[str]:
    """`git worktree list --porcelain`, tried again a few times: a session's worktree being added at that moment
    shows as a half-made entry git cannot read ("failed to read .git/worktrees/<id>/commondir")."""
    for attempt in range(tries):
        p = git(repo, "worktree", "list", "--porcelain", check=attempt == tries - 1)
        if p.returncode == 0:
            return p.stdout.splitlines()
        time.sleep(0.1 * (attempt + 1))
    return []  # not reached: the last try raises


def reset_merge_worktree(repo: Path, where: Path, tip: str) -> None:
    """The runtime's merge worktree, clean and detached at `tip` (made if missing; a half merge left by a crash
    is thrown away here)."""
    if not (where / ".git").exists():
        with repo_lock(repo, "worktrees"):
            git(repo, "worktree", "prune")
            where.parent.mkdir(parents=True, exist_ok=True)
            git(repo, "worktree", "add", "--detach", "--force", str(where), tip)
        return
    # A git that died mid-write (a full disk, a kill -9) leaves its index lock behind, and every later merge would
    # refuse; under the repository's merge lock no other git works in this worktree, so it is stale.
    git_dir = Path(out(where, "rev-parse", "--absolute-git-dir"))
    (git_dir / "index.lock").unlink(missing_ok=True)
    for abort in (("merge", "--abort"), ("cherry-pick", "--abort"), ("rebase", "--abort")):
        git(where, *abort, check=False)
    git(where, "checkout", "--detach", "--force", tip)
    git(where, "reset", "--hard", "--quiet", tip)
    git(where, "clean", "-fdq")


def _conflicts(where: Path) -> list[str]:
    return sorted(set(git(where, "diff", "--name-only", "--diff-filter=U").stdout.split("\n")) - {""})


def merge_one(
    repo: Path,
    where: Path,
    into: str,
    branch: str,
    start: str,
    message: str,
    history: Literal["merge", "linear"] = "merge",
    check: list[str] | None = None,
    allow_checked_out: bool = False,
    check_started: Callable[[int | None], None] | None = None,
) -> MergeResult:
    """Merge `branch` (started at `start`) into `into`; the caller holds `lock(repo)`. `check_started` is told the
    check's process group (a runtime that stops kills it rather than wait for it)."""
    tip = rev(repo, f"refs/heads/{into}")
    if tip is None:
        raise BadInput(f"no branch {into!r} in {repo} to merge into")
    head = rev(repo, f"refs/heads/{branch}")
    if head is None:
        raise BadInput(f"the branch {branch} is gone from {repo}")
    holder = checked_out_at(repo, into, where)
    if holder is not None:
        if not allow_checked_out:
            return MergeResult(
                "waiting", note=f"{into} is checked out in {holder}: merging would leave its files behind"
            )
        if dirty_files(holder):
            return MergeResult("waiting", note=f"{into} is checked out in {holder}, which has uncommitted changes")
    reset_merge_worktree(repo, where, tip)
    if head == tip or git(repo, "merge-base", "--is-ancestor", head, tip, check=False).returncode == 0:
        return MergeResult("merged", commit=tip, note="nothing to merge: already in " + into)
    if history == "linear" and not any(
        line.startswith("+") for line in git(repo, "cherry", tip, head, start).stdout.split("\n")
    ):
        # Its commits are all on the target already (replayed by a merge a crash cut off before it was recorded).
        return MergeResult("merged", commit=tip, note="nothing to merge: its commits are already in " + into)
    if history == "merge":
        p = git(where, "merge", "--no-ff", "--no-edit", "-m", message, head, check=False, identity=True)
    else:
        p = git(
            where,
            "cherry-pick",
            "--allow-empty",
            "--keep-redundant-commits",
            f"{start}..{head}",
            check=False,
            identity=True,
        )
    if p.returncode != 0:
        files = _conflicts(where)
        git(where, "merge" if history == "merge" else "cherry-pick", "--abort", check=False)
        if not files:  # not a conflict: git could not write the merge (a full disk, a broken repository)
            return MergeResult("failed", note=first_line(p.stderr or p.stdout))
        return MergeResult("conflict", files=files, note=_first(p))
    new = out(where, "rev-parse", "HEAD")
    if check:
        failed = _run_check(check, where, check_started)
        if failed is not None:
            reset_merge_worktree(repo, where, tip)
            return MergeResult("check_failed", note=failed)
    if holder is not None:
        git(holder, "merge", "--ff-only", "--quiet", new)
    else:
        try:
            git(repo, "update-ref", "-m", message, f"refs/heads/{into}", new, tip)
        except GitError as exc:
            if rev(repo, f"refs/heads/{into}") != tip:
                return MergeResult("waiting", note=f"{into} moved while merging; trying again")
            return MergeResult("failed", note=f"{into} could not be moved: {exc}")
    return MergeResult("merged", commit=new)


def _first(p: subprocess.CompletedProcess[str]) -> str:
    for line in (p.stdout + "\n" + p.stderr).splitlines():
        if "CONFLICT" in line:
            return line.strip()[:300]
    return (p.stderr or p.stdout).strip().splitlines()[0][:300] if (p.stderr or p.stdout).strip() else "failed"


def _run_check(argv: list[str], where: Path, started: Callable[[int | None], None] | None = None) -> str | None:
    """None when the check passes; else what it said (the tail of its output)."""
    try:
        ran = commands.run(argv, where, CHECK_TIMEOUT, CHECK_TAIL, started=started)
    except OSError as exc:  # FileNotFoundError: no such program; PermissionError: not executable
        return f"check: {argv[0]} {commands.why(exc)}"
    if ran.code is None:
        return f"check: over {CHECK_TIMEOUT:g}s (killed): {ran.tail}".rstrip(": ")
    if ran.code == 0:
        return None
    return f"check exited {ran.code}: {ran.tail}"
