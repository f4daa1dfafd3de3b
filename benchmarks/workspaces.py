"""Benchmark: what a workspace costs per session on a repository of 10,000 files: making its worktree, committing
and counting what it changed, and merging its branch, beside plain git doing the same in the same run.

Run by hand: `python benchmarks/workspaces.py [SESSIONS] [FILES]` (default 20 sessions, 10,000 files).

- create: crewtui's `worktrees.create` (base checked, `git worktree add -b`, the crew's files copied in) vs a bare
  `git worktree add -b` of the same base;
- end: `commit_all` + `changes` (what the runtime does when a session ends) for a one-file change;
- merge: crewtui's `merge_one` under the repository's lock, one branch after another (its own worktree reset to
  the target, `merge --no-ff`, `update-ref` compare-and-swap) vs plain `git merge --no-ff` of the same branches
  in a checkout of the target.
Everything runs in a temporary directory; nothing leaves this machine.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crewtui.workspaces import merging, worktrees
from crewtui.workspaces.git import git


def make_repo(root: Path, files: int) -> Path:
    repo = root / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet", "--initial-branch=main")
    per_dir = 100
    for i in range(files):
        d = repo / f"src/d{i // per_dir:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i % per_dir:03d}.txt").write_text(f"file {i}\n" + "x" * 200 + "\n")
    (repo / ".env").write_text("TOKEN=1\n")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "10k files", identity=True)
    return repo


def timed(fn: object, *args: object) -> float:
    t0 = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - t0


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f} {max(values) * 1000:8.1f}"


def main() -> int:
    sessions = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    files = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    with tempfile.TemporaryDirectory(prefix="crewtui-ws-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        repo = make_repo(root, files)
        print(f"repository: {files:,} files, made in {time.perf_counter() - t0:.1f}s; {sessions} sessions")
        create, plain_create, end, merge, plain_merge = [], [], [], [], []
        made: list[tuple[str, str, Path]] = []
        for i in range(sessions):
            wt = root / "wt" / f"s{i}"
            branch = f"crew/s{i}"
            t = time.perf_counter()
            start = worktrees.create(repo, "main", branch, wt, [".env"])
            create.append(time.perf_counter() - t)
            plain_create.append(
                timed(git, repo, "worktree", "add", "--quiet", "-b", f"plain/s{i}", str(root / "pw" / f"s{i}"), "main")
            )
            (wt / f"src/d{i % 100:03d}/f{i % 100:03d}.txt").write_text(f"changed by s{i}\n")
            t = time.perf_counter()
            worktrees.commit_all(wt, f"crewtui: s{i}")
            worktrees.changes(repo, start, branch)
            end.append(time.perf_counter() - t)
            made.append((branch, start, wt))
        # Plain git: a checkout of the target (a clone of it) merging the same branches one after another.
        plain = root / "plain-merge"
        git(repo, "worktree", "add", "--quiet", "-b", "plain-target", str(plain), "main")
        for branch, _start, _wt in made:
            plain_merge.append(timed(git, plain, "merge", "--quiet", "--no-ff", "--no-edit", branch))
        where = root / "merge-wt"
        git(repo, "checkout", "--quiet", "--detach")  # main is not checked out in the user's checkout
        for branch, start, _wt in made:
            t = time.perf_counter()
            with merging.lock(repo):
                r = merging.merge_one(repo, where, "main", branch, start, f"merge {branch}")
            merge.append(time.perf_counter() - t)
            assert r.outcome == "merged", r
        print(f"{'per session (ms)':<34} {'median':>8} {'max':>8}")
        print(f"{'create: crewtui worktrees.create':<34} {ms(create)}")
        print(f"{'create: plain git worktree add':<34} {ms(plain_create)}")
        print(f"{'end: commit_all + changes':<34} {ms(end)}")
        print(f"{'merge: crewtui merge_one (locked)':<34} {ms(merge)}")
        print(f"{'merge: plain git merge --no-ff':<34} {ms(plain_merge)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
