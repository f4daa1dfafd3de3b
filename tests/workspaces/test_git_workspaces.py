"""Worktrees and merges on real git repositories in tmp_path: a worktree per session from the base, what it
changed, the merge one at a time in crewtui's own worktree (merge commits or linear), a conflict naming its files,
a failing check, a target checked out in the user's checkout, and the user's checkout left byte for byte alone."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from crewtui.errors import BadInput
from crewtui.workspaces import merging, worktrees
from crewtui.workspaces.git import git, out


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    for name, text in (files or {"README.md": "# blog\n", "post.md": "line 1\nline 2\nline 3\n"}).items():
        (path / name).write_text(text)
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "-m", "first", identity=True)
    return path


def snapshot(checkout: Path) -> dict[str, str]:
    """Every file of a checkout but its .git, by content hash: 'byte for byte'."""
    return {
        str(p.relative_to(checkout)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(checkout.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(checkout).parts
    }


def session(repo: Path, tmp: Path, label: str) -> tuple[Path, str, str]:
    wt = tmp / "worktrees" / label
    branch = worktrees.branch_for(label)
    start = worktrees.create(repo, "main", branch, wt, copy=[".env"])
    return wt, branch, start


def test_a_worktree_per_session_from_the_base_and_what_it_changed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n", ".gitignore": ".env\n"})
    (repo / ".env").write_text("SECRET=1\n")  # not in git: copied in
    wt, branch, start = session(repo, tmp_path, "fix-1")
    assert out(wt, "rev-parse", "--abbrev-ref", "HEAD") == "crew/fix-1"
    assert start == out(repo, "rev-parse", "main")
    assert (wt / ".env").read_text() == "SECRET=1\n"
    (wt / "a.txt").write_text("a\nb\nc\n")
    (wt / "new.txt").write_text("new\n")
    assert worktrees.commit_all(wt, "crewtui: fix-1") is True
    assert worktrees.commit_all(wt, "crewtui: fix-1") is False  # nothing left
    c = worktrees.changes(repo, start, branch)
    assert c.files == [
        {"path": "a.txt", "insertions": 2, "deletions": 0},
        {"path": "new.txt", "insertions": 1, "deletions": 0},
    ]
    assert (c.insertions, c.deletions, c.commits) == (3, 0, 1)
    assert "+new" in worktrees.diff(repo, start, branch)
    assert "2 files changed" in worktrees.diff(repo, start, branch, stat=True)
    # Made again (a retry, a restart): the same worktree and start, its work kept.
    assert worktrees.create(repo, "main", branch, wt, copy=[]) == start
    assert (wt / "new.txt").exists()


def test_bad_repositories_and_bases_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(BadInput, match="is not a git repository"):
        worktrees.repo_root(tmp_path / "plain")
    with pytest.raises(BadInput, match="is not a directory"):
        worktrees.repo_root(tmp_path / "missing")
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(BadInput, match="no branch 'nope'"):
        worktrees.create(repo, "nope", "crew/x", tmp_path / "wt", copy=[])


@pytest.mark.parametrize("history", ["merge", "linear"])
def test_branches_merge_one_after_another_and_a_conflict_names_its_file(tmp_path: Path, history: str) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "checkout", "--quiet", "-b", "work")  # the user works on another branch; main is the target
    (repo / "scratch.txt").write_text("uncommitted work of the user\n")
    before = snapshot(repo)
    where = tmp_path / "merge-wt"
    a = session(repo, tmp_path, "a")
    b = session(repo, tmp_path, "b")
    c = session(repo, tmp_path, "c")
    (a[0] / "a.md").write_text("from a\n")
    (b[0] / "post.md").write_text("line 1\nB's line 2\nline 3\n")
    (c[0] / "post.md").write_text("line 1\nC's line 2\nline 3\n")  # the same line as b
    results = {}
    for label, (wt, branch, start) in zip("abc", (a, b, c), strict=True):
        worktrees.commit_all(wt, f"crewtui: {label}")
        with merging.lock(repo):
            results[label] = merging.merge_one(repo, where, "main", branch, start, f"merge {label}", history)  # type: ignore[arg-type]
    assert results["a"].outcome == "merged" and results["b"].outcome == "merged"
    assert results["c"].outcome == "conflict" and results["c"].files == ["post.md"]
    assert out(repo, "show", "main:post.md") == "line 1\nB's line 2\nline 3"
    merges = out(repo, "rev-list", "--merges", "--count", "main")
    assert merges == ("2" if history == "merge" else "0")
    assert git(repo, "fsck", "--no-progress").returncode == 0
    assert snapshot(repo) == before  # the user's checkout: byte for byte
    assert (c[0] / "post.md").read_text().startswith("line 1\nC's")  # the conflicting branch keeps its work


def test_a_failing_check_keeps_the_target_where_it_was(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "checkout", "--quiet", "-b", "work")
    wt, branch, start = session(repo, tmp_path, "bad")
    (wt / "post.md").write_text("broken\n")
    worktrees.commit_all(wt, "crewtui: bad")
    tip = out(repo, "rev-parse", "main")
    check = ["sh", "-c", "grep -q 'line 1' post.md || { echo 'tests: post.md lost line 1'; exit 1; }"]
    with merging.lock(repo):
        r = merging.merge_one(repo, tmp_path / "m", "main", branch, start, "merge bad", check=check)
    assert r.outcome == "check_failed" and "post.md lost line 1" in r.note
    assert out(repo, "rev-parse", "main") == tip


def test_a_target_checked_out_by_the_user_waits_unless_allowed_and_clean(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")  # main is checked out in the user's checkout
    wt, branch, start = session(repo, tmp_path, "s")
    (wt / "s.md").write_text("s\n")
    worktrees.commit_all(wt, "crewtui: s")
    tip = out(repo, "rev-parse", "main")
    with merging.lock(repo):
        r = merging.merge_one(repo, tmp_path / "m", "main", branch, start, "merge s")
    assert r.outcome == "waiting" and f"main is checked out in {repo}" in r.note
    assert out(repo, "rev-parse", "main") == tip
    (repo / "README.md").write_text("edited by the user\n")
    with merging.lock(repo):
        r = merging.merge_one(repo, tmp_path / "m", "main", branch, start, "merge s", allow_checked_out=True)
    assert r.outcome == "waiting" and "uncommitted changes" in r.note
    git(repo, "checkout", "--quiet", "--", "README.md")
    with merging.lock(repo):
        r = merging.merge_one(repo, tmp_path / "m", "main", branch, start, "merge s", allow_checked_out=True)
    assert r.outcome == "merged" and (repo / "s.md").read_text() == "s\n"  # fast-forwarded in place


def test_a_linear_merge_done_but_not_recorded_is_not_replayed_twice(tmp_path: Path) -> None:
    # A runtime killed after the target moved but before it recorded "merged" merges the branch again at restart:
    # its commits are on the target already, so nothing is replayed a second time.
    repo = make_repo(tmp_path / "repo")
    git(repo, "checkout", "--quiet", "-b", "work")
    wt, branch, start = session(repo, tmp_path, "once")
    (wt / "once.md").write_text("once\n")
    worktrees.commit_all(wt, "crewtui: once")
    for _ in range(2):
        with merging.lock(repo):
            r = merging.merge_one(repo, tmp_path / "m", "main", branch, start, "merge once", "linear")
        assert r.outcome == "merged"
    assert r.note.startswith("nothing to merge")
    assert int(out(repo, "rev-list", "--count", "main")) == 2


def test_changes_list_the_biggest_files_and_count_them_all(tmp_path: Path) -> None:
    """An agent that commits a `node_modules` lists every file in its session's record, every listing and every
    event: megabytes. The biggest are listed (in git's order), all are counted."""
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    wt, branch, start = session(repo, tmp_path, "big-1")
    for i in range(12):
        (wt / f"f{i:02}.txt").write_text("x\n" * (i + 1))  # f11 is the biggest
    worktrees.commit_all(wt, "crewtui: big-1")
    c = worktrees.changes(repo, start, branch, keep=3)
    assert [f["path"] for f in c.files] == ["f09.txt", "f10.txt", "f11.txt"]
    assert c.files_total == 12 and c.as_dict()["files_total"] == 12
    assert c.insertions == sum(range(1, 13))  # every file counted
    assert len(worktrees.changes(repo, start, branch).files) == 12  # under the cap: all of them
