"""A session's workspace: its own git worktree on branch `crew/<label>`, made from the base branch by the runtime,
and what it changed there.

- `create`: the worktree (reused when the branch and the directory already exist: a retry, a restart), the
  files the crew copies in from the repository's checkout (`.env`), and the commit it started from;
- `commit_all`: an agent that never commits still delivers: what it left uncommitted is committed on its branch
  by the runtime, naming the session;
- `changes` / `diff`: what its branch changed against the commit it started from (not against the base branch
  as it is now, which other merges move).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crewtui.errors import BadInput
from crewtui.workspaces.git import git, lines, out, repo_lock, rev

BRANCH_PREFIX = "crew/"


def branch_for(label: str) -> str:
    return BRANCH_PREFIX + label


def repo_root(path: Path) -> Path:
    """The top of the git checkout `path` is in; one line when it is none."""
    if not path.is_dir():
        raise BadInput(f"{path} is not a directory (a workspace needs a git repository)")
    p = git(path, "rev-parse", "--show-toplevel", check=False)
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


def dirty_files(checkout: Path) -> list[str]:
    """Uncommitted changes (tracked or not) in a checkout, as git status names them."""
    return [line[3:] for line in git(checkout, "status", "--porcelain", "--untracked-files=normal").stdout.splitlines()]


def create(repo: Path, base: str, branch: str, path: Path, copy: list[str]) -> str:
    """Make (or find again) the worktree at `path` on `branch`, from `base`; return the commit it starts from."""
    start = base_commit(repo, base)
    with repo_lock(repo, "worktrees"):
        if rev(repo, f"refs/heads/{branch}") is not None:
            if not (path / ".git").exists():  # the branch outlived its worktree: check it out again
                git(repo, "worktree", "prune")
                git(repo, "worktree", "add", str(path), branch)
            start = out(repo, "merge-base", start, branch)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            git(repo, "worktree", "add", "-b", branch, str(path), start)
    for name in copy:
        src = repo / name
        if src.is_file():
            dst = path / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return start


def commit_all(worktree: Path, message: str) -> bool:
    """Commit whatever is uncommitted in the worktree (new files too); False when there was nothing."""
    git(worktree, "add", "--all")
    if git(worktree, "diff", "--cached", "--quiet", check=False).returncode == 0:
        return False
    git(worktree, "commit", "--quiet", "--no-verify", "-m", message, identity=True)
    return True


@dataclass
class Changes:
    """What a branch changed against the commit it started from."""

    files: list[dict[str, Any]] = field(default_factory=list)  # {"path", "insertions", "deletions"} (-1: binary)
    insertions: int = 0
    deletions: int = 0
    commits: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "insertions": self.insertions,
            "deletions": self.deletions,
            "commits": self.commits,
        }


def changes(repo: Path, start: str, branch: str) -> Changes:
    c = Changes()
    for line in lines(repo, "diff", "--numstat", "--no-renames", start, branch, "--"):
        added, deleted, path = line.split("\t", 2)
        ins = -1 if added == "-" else int(added)
        dels = -1 if deleted == "-" else int(deleted)
        c.files.append({"path": path, "insertions": ins, "deletions": dels})
        c.insertions += max(0, ins)
        c.deletions += max(0, dels)
    c.commits = int(out(repo, "rev-list", "--count", f"{start}..{branch}") or 0)
    return c


def diff(repo: Path, start: str, branch: str, stat: bool = False) -> str:
    args = ["diff", "--no-color", "--no-ext-diff"] + (["--stat"] if stat else []) + [start, branch, "--"]
    return git(repo, *args).stdout


def unmerged_work(repo: Path, path: Path, branch: str | None, into: str | None) -> str | None:
    """Why removing this worktree (and branch) would lose work, or None when it would not: uncommitted changes
    in it, or commits on its branch that `into` does not have."""
    if (path / ".git").exists():
        dirty = dirty_files(path)
        if dirty:
            return f"{len(dirty)} uncommitted change{'s' if len(dirty) != 1 else ''} in it"
    if branch is None or rev(repo, f"refs/heads/{branch}") is None:
        return None
    target = rev(repo, f"refs/heads/{into}") if into else None
    if target is None:
        return f"its branch {branch} has commits and no branch {into} to compare with"
    # Commits of the branch the target lacks: merged ones are its ancestors, replayed ones (a linear merge) have
    # their patch there ("-" in git cherry); "+" are work the target does not have.
    ahead = sum(1 for x in lines(repo, "cherry", target, branch) if x.startswith("+"))
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
