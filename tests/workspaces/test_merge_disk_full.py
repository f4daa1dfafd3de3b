"""A disk that fills mid-merge: the target branch never points at a half merge.

The merge runs in a child process whose file size limit (RLIMIT_FSIZE, inherited by the git it runs) is below
the size of a file the branch adds: git's write of that file into the merge worktree fails the way it fails on
a full disk (write(2) refused; EFBIG here, ENOSPC there), in the middle of the merge. The merge is `failed`
(not `conflict`: no file conflicts), the target is where it was, `git fsck` is clean, the user's checkout is
byte for byte the same, and once there is room again the same branch merges.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from crewtui.workspaces import merging
from crewtui.workspaces.git import git, out
from tests.workspaces.test_git_workspaces import make_repo, session, snapshot

LIMIT = 512 * 1024  # bytes a file may grow to in the child: the "disk" fills at this size

MERGE_IN_A_FULL_DISK = """
import json, resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing git
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from crewtui.workspaces import merging
repo, where, branch, start, history = sys.argv[2:7]
with merging.lock(Path(repo)):
    r = merging.merge_one(Path(repo), Path(where), "main", branch, start, "merge big", history)
print(json.dumps(dict(outcome=r.outcome, files=r.files, note=r.note, commit=r.commit)))
"""


def merge_with_limit(repo: Path, where: Path, branch: str, start: str, history: str) -> dict[str, Any]:
    p = subprocess.run(
        [sys.executable, "-c", MERGE_IN_A_FULL_DISK, str(LIMIT), str(repo), str(where), branch, start, history],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    result: dict[str, Any] = json.loads(p.stdout)
    return result


@pytest.mark.parametrize("history", ["merge", "linear"])
def test_a_disk_that_fills_mid_merge_leaves_the_target_where_it_was(tmp_path: Path, history: str) -> None:
    repo = make_repo(tmp_path / "blog")
    git(repo, "checkout", "--quiet", "-b", "work")  # the user's checkout
    before = snapshot(repo)
    wt, branch, start = session(repo, tmp_path, "big-1")
    (wt / "notes.md").write_text("small\n")
    (wt / "data.bin").write_bytes(os.urandom(4 * LIMIT))  # incompressible: its write in the merge hits the limit
    git(wt, "add", "--all")
    git(wt, "commit", "--quiet", "-m", "big data", identity=True)
    tip = out(repo, "rev-parse", "main")
    where = tmp_path / "merges" / "blog"

    r = merge_with_limit(repo, where, branch, start, history)
    assert r["outcome"] == "failed" and r["files"] == [] and r["commit"] is None, r
    assert r["note"]  # git's own words for the write that failed
    assert out(repo, "rev-parse", "main") == tip  # never a half merge
    assert git(repo, "fsck", "--no-progress", check=False).returncode == 0
    assert snapshot(repo) == before
    assert "data.bin" not in out(repo, "ls-tree", "--name-only", "main")

    # Room again: the next try (the merge worktree left by the failed one is reset first) merges it whole.
    with merging.lock(repo):
        again = merging.merge_one(repo, where, "main", branch, start, "merge big", history)  # type: ignore[arg-type]
    assert again.outcome == "merged"
    assert out(repo, "rev-parse", "main") == again.commit != tip
    assert git(repo, "cat-file", "-s", "main:data.bin").stdout.strip() == str(4 * LIMIT)
    assert git(repo, "fsck", "--no-progress", check=False).returncode == 0
    assert snapshot(repo) == before
