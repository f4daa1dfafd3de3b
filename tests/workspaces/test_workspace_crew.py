"""Workspaces in a real runtime on a real git repository in tmp_path: 20 sessions edit one repository at once, each
in its own worktree; their branches are merged one after another; two that change the same line: the first
merges, the second is `conflict` naming the file; the history is as configured, `git fsck` is clean, and the
user's checkout is byte for byte unchanged. A kill -9 in the middle of a merge leaves the target before it, and
the queue resumes after the restart."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from crewtui.workspaces.git import git, out
from tests.faults.helpers import ENV, PY, Headless, call, ctl, kill_leftover_sessions, wait_until
from tests.workspaces.test_git_workspaces import make_repo, snapshot

# The agent: writes notes/<label>.md (its own file), or for clash-N the same line of post.md; clash-2 later.
AGENT = """
import json, os, pathlib, sys, time
label = sys.argv[1]
if label.startswith("clash-"):
    time.sleep(0.5 if label == "clash-1" else 2.0)
    pathlib.Path("post.md").write_text("line 1\\n" + label + " wrote line 2\\nline 3\\n")
else:
    pathlib.Path("notes").mkdir(exist_ok=True)
    pathlib.Path("notes", label + ".md").write_text("notes of " + label + "\\n")
print(json.dumps(dict(ok=True, cwd=os.environ["CREWTUI_WORKTREE"])))
"""


def crew(tmp_path: Path, repo: Path, history: str = "merge", check: list[str] | None = None) -> Path:
    path = tmp_path / "crew.toml"
    check_line = f"check = {json.dumps(check)}\n" if check else ""
    path.write_text(
        f"""
[crew]
name = "coders"
max_concurrent = 30

[agents.editor]
command = [{json.dumps(PY)}, "-c", {json.dumps(AGENT)}, "{{label}}"]

[agents.editor.workspace]
repo = {json.dumps(str(repo))}
base = "main"
merge = "auto"
history = "{history}"
{check_line}"""
    )
    return path


def sessions(h: Headless, keys: list[str]) -> dict[str, dict[str, Any]]:
    return {s["label"]: s for s in (call(h.dd.socket, "get", ref=k)["result"] for k in keys)}


@pytest.mark.parametrize("history", ["merge", "linear"])
def test_twenty_sessions_edit_one_repository_and_one_writer_merges_them(tmp_path: Path, history: str) -> None:
    repo = make_repo(tmp_path / "blog")
    git(repo, "checkout", "--quiet", "-b", "work")  # the user's checkout is on its own branch, mid-edit
    (repo / "draft.md").write_text("the user's unsaved thoughts\n")
    before = snapshot(repo)
    data = tmp_path / "data"
    h = Headless(data, crew(tmp_path, repo, history))
    try:
        labels = [f"edit-{i}" for i in range(1, 19)] + ["clash-1", "clash-2"]
        keys = [call(h.dd.socket, "spawn", label=label, agent="editor")["result"]["key"] for label in labels]

        def settled() -> bool:
            got = sessions(h, keys)
            return all(s["state"] == "done" and s["merge"] in ("merged", "conflict") for s in got.values())

        wait_until(settled, 90, "every session to end and its branch to be merged or in conflict")
        got = sessions(h, keys)
        worktrees = {s["worktree"] for s in got.values()}
        assert len(worktrees) == 20  # each in its own
        assert all(s["result"]["cwd"] == s["worktree"] for s in got.values())
        assert {label for label, s in got.items() if s["merge"] == "conflict"} == {"clash-2"}
        assert "post.md" in got["clash-2"]["merge_note"]
        assert got["clash-1"]["changes"]["files"] == [{"path": "post.md", "insertions": 1, "deletions": 1}]
        assert got["edit-3"]["changes"]["files"] == [{"path": "notes/edit-3.md", "insertions": 1, "deletions": 0}]
        assert got["edit-3"]["domain"] == f"repo:{repo}#crew/edit-3"
        # The target has every merged branch's work, in the history configured.
        assert out(repo, "show", "main:post.md") == "line 1\nclash-1 wrote line 2\nline 3"
        notes = out(repo, "ls-tree", "--name-only", "main", "notes/").splitlines()
        assert sorted(notes) == sorted(f"notes/edit-{i}.md" for i in range(1, 19))
        merges = int(out(repo, "rev-list", "--merges", "--count", "main"))
        assert merges == (19 if history == "merge" else 0)
        if history == "linear":
            assert int(out(repo, "rev-list", "--count", "main")) == 1 + 19  # first + one commit per branch
        assert git(repo, "fsck", "--no-progress").returncode == 0
        assert snapshot(repo) == before  # byte for byte, the user's uncommitted file too
        assert out(repo, "rev-parse", "--abbrev-ref", "HEAD") == "work"
        # The conflicting branch keeps its worktree and its work; ctl diff shows it.
        assert Path(got["clash-2"]["worktree"], "post.md").read_text().startswith("line 1\nclash-2")
        p = ctl(data, "diff", "clash-2")
        assert p.returncode == 0 and "+clash-2 wrote line 2" in p.stdout
        assert "1 file changed" in ctl(data, "diff", "clash-2", "--stat").stdout
        merged = [e for e in call(h.dd.socket, "events")["result"] if e["kind"] == "workspace"]
        assert sum(1 for e in merged if e["action"] == "merged") == 19
        # Discarding the conflict removes its branch and worktree; merging a merged one is one line.
        p = ctl(data, "discard", "clash-2", "--yes")
        assert p.returncode == 0 and "discarded" in p.stdout
        assert not Path(got["clash-2"]["worktree"]).exists()
        assert git(repo, "rev-parse", "--verify", "--quiet", "refs/heads/crew/clash-2", check=False).returncode != 0
        p = ctl(data, "merge", "edit-1")
        assert p.returncode == 2 and "already merged" in p.stderr and p.stderr.count("\n") == 1
    finally:
        h.stop()
        kill_leftover_sessions(data)


def test_a_kill9_in_the_middle_of_a_merge_leaves_the_target_before_it_and_the_queue_resumes(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "blog")
    git(repo, "checkout", "--quiet", "-b", "work")
    started = tmp_path / "check-started"
    # The check (run on the merged tree before the target moves) says it started, then takes its time.
    check = ["sh", "-c", f"touch {started}; sleep 2; test -f notes/edit-1.md"]
    data = tmp_path / "data"
    path = crew(tmp_path, repo, check=check)
    h = Headless(data, path)
    try:
        key = call(h.dd.socket, "spawn", label="edit-1", agent="editor")["result"]["key"]
        tip = out(repo, "rev-parse", "main")
        wait_until(started.exists, 30, "the merge's check to start")
        h.proc.send_signal(signal.SIGKILL)
        h.proc.wait(10)
        assert out(repo, "rev-parse", "main") == tip  # before the merge, never between
        assert git(repo, "fsck", "--no-progress").returncode == 0
        started.unlink()
        h = Headless(data, path)
        wait_until(lambda: call(h.dd.socket, "get", ref=key)["result"]["merge"] == "merged", 30, "the queue to resume")
        assert out(repo, "show", "main:notes/edit-1.md") == "notes of edit-1"
        assert started.exists()  # merged again from the start, its check run again
        assert git(repo, "fsck", "--no-progress").returncode == 0
    finally:
        h.stop()
        kill_leftover_sessions(data)


def test_bad_repositories_and_a_failing_setup_are_one_line(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "blog")
    (tmp_path / "plain").mkdir()
    path = tmp_path / "crew.toml"
    path.write_text(
        f"""
[agents.setup-fails]
command = [{json.dumps(PY)}, "-c", "print(1)"]
[agents.setup-fails.workspace]
repo = {json.dumps(str(repo))}
setup = ["sh", "-c", "echo npm ERR! missing package.json >&2; exit 3"]
"""
    )
    data = tmp_path / "data"
    h = Headless(data, path)
    try:
        p = ctl(data, "spawn", "--label", "x-1", "--repo", str(tmp_path / "plain"), "--", PY, "-c", "print(1)")
        assert p.returncode == 2 and "is not a git repository" in p.stderr and p.stderr.count("\n") == 1
        p = ctl(data, "spawn", "--label", "x-2", "--repo", str(repo), "--base", "nope", "--", PY, "-c", "print(1)")
        assert p.returncode == 2 and "no branch 'nope'" in p.stderr
        # `~` quoted (so no shell expanded it) is the user's home, as it is in the crew file (it was CWD/~/...).
        (tmp_path / "home").mkdir()
        p = subprocess.run(
            [
                *(PY, "-m", "crewtui", "ctl", "--data-dir", str(data)),
                *("spawn", "--label", "x-0", "--repo", "~/none"),
                *("--", PY, "-c", "print(1)"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**ENV, "HOME": str(tmp_path / "home")},
        )
        assert p.returncode == 2 and f"{tmp_path / 'home' / 'none'} is not a directory" in p.stderr, p.stderr
        assert call(h.dd.socket, "list")["result"] == []  # nothing changed
        key = call(h.dd.socket, "spawn", label="x-3", agent="setup-fails")["result"]["key"]
        wait_until(lambda: call(h.dd.socket, "get", ref=key)["result"]["state"] == "failed", 30, "the failure")
        reason = call(h.dd.socket, "get", ref=key)["result"]["reason"]
        assert "workspace setup" in reason and "exited 3" in reason and "missing package.json" in reason
        # A plain argv with --repo: its own worktree on the branch checked out (main), merged by hand. The user's
        # checkout of main has uncommitted changes: said on the timeline, and not in the session's worktree.
        (repo / "README.md").write_text("the user's unsaved edit\n")
        p = ctl(data, "spawn", "--label", "x-4", "--repo", str(repo), "--", PY, "-c", "open('x4.txt','w').write('4')")
        assert p.returncode == 0, p.stderr
        texts = [e.get("text", "") for e in call(h.dd.socket, "events")["result"] if e["kind"] == "system"]
        assert any("x-4:" in t and "has uncommitted changes on main" in t for t in texts), texts
        assert Path(call(h.dd.socket, "get", ref="x-4")["result"]["worktree"], "README.md").read_text() == "# blog\n"
        wait_until(lambda: call(h.dd.socket, "get", ref="x-4")["result"]["state"] == "done", 30, "x-4")
        s = call(h.dd.socket, "get", ref="x-4")["result"]
        assert s["merge"] == "none" and s["changes"]["files"][0]["path"] == "x4.txt"
        p = ctl(data, "merge", "x-4")
        assert p.returncode == 0 and "queued" in p.stdout
        # main is checked out in the user's checkout: the merge waits, saying where.
        wait_until(
            lambda: "checked out in" in (call(h.dd.socket, "get", ref="x-4")["result"]["merge_note"] or ""), 30, "w"
        )
        assert call(h.dd.socket, "get", ref="x-4")["result"]["merge"] == "queued"
    finally:
        h.stop()
        kill_leftover_sessions(data)


def test_a_merged_sessions_worktree_and_branch_go_after_the_grace(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "blog")
    git(repo, "checkout", "--quiet", "-b", "work")
    path = crew(tmp_path, repo)
    path.write_text(path.read_text() + 'cleanup_after = "1s"\n')
    data = tmp_path / "data"
    h = Headless(data, path)
    try:
        key = call(h.dd.socket, "spawn", label="edit-1", agent="editor")["result"]["key"]
        wait_until(lambda: call(h.dd.socket, "get", ref=key)["result"]["merge"] == "merged", 30, "the merge")
        wt = Path(call(h.dd.socket, "get", ref=key)["result"]["worktree"])

        def removed() -> bool:
            events = call(h.dd.socket, "events")["result"]
            return any(e["kind"] == "workspace" and e["action"] == "removed" for e in events)

        wait_until(removed, 10, "the worktree and branch to go")
        assert not wt.exists()
        assert git(repo, "rev-parse", "--verify", "--quiet", "refs/heads/crew/edit-1", check=False).returncode != 0
        assert out(repo, "show", "main:notes/edit-1.md") == "notes of edit-1"  # the work stays, merged
        actions = [e["action"] for e in call(h.dd.socket, "events")["result"] if e["kind"] == "workspace"]
        assert actions == ["queued", "merging", "merged", "removed"]
    finally:
        h.stop()
        kill_leftover_sessions(data)


def test_port_gives_each_session_its_own_free_port_in_command_and_env(tmp_path: Path) -> None:
    path = tmp_path / "crew.toml"
    path.write_text(
        f"""
[agents.server]
command = [{json.dumps(PY)}, "-c", "import os, sys; print(sys.argv[1] + ' ' + os.environ['PORT'])", "{{port}}"]
env = {{ PORT = "{{port}}" }}
"""
    )
    data = tmp_path / "data"
    h = Headless(data, path)
    try:
        keys = [call(h.dd.socket, "spawn", label=f"dev-{i}", agent="server")["result"]["key"] for i in (1, 2)]
        wait_until(lambda: all(call(h.dd.socket, "get", ref=k)["result"]["state"] == "done" for k in keys), 30, "x")
        got = [call(h.dd.socket, "get", ref=k)["result"] for k in keys]
        lines = [s["last_line"] for s in got]
        ports = [s["port"] for s in got]
        assert lines == [f"{p} {p}" for p in ports] and ports[0] != ports[1] and all(1024 < p < 65536 for p in ports)
    finally:
        h.stop()
        kill_leftover_sessions(data)


TRY = (
    "import os, time; label = os.environ['CREWTUI_SESSION_LABEL']; "
    "time.sleep(4 if label.endswith('-3') else 0); open(label + '.txt', 'w').write(label)"
)


def test_best_of_three_merging_one_discards_the_others(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "blog")
    git(repo, "checkout", "--quiet", "-b", "work")
    data = tmp_path / "data"
    h = Headless(data)
    try:
        p = ctl(
            data,
            "spawn",
            "--label",
            "try",
            "--best-of",
            "3",
            "--repo",
            str(repo),
            "--base",
            "main",
            "--",
            PY,
            "-c",
            TRY,
        )
        assert p.returncode == 0, p.stderr
        assert [line.split()[1] for line in p.stdout.splitlines()] == ["try-1", "try-2", "try-3"]

        def get(label: str) -> dict[str, Any]:
            return call(h.dd.socket, "get", ref=label)["result"]

        wait_until(lambda: get("try-1")["state"] == get("try-2")["state"] == "done", 30, "two tries to end")
        assert get("try-3")["state"] == "running"
        assert ctl(data, "merge", "try-1").returncode == 0
        wait_until(lambda: get("try-1")["merge"] == "merged", 30, "the merge")
        wait_until(lambda: get("try-2")["merge"] == "discarded", 10, "the other ended try to be discarded")
        wait_until(lambda: get("try-3")["merge"] == "discarded", 30, "the running try, once ended, discarded")
        assert out(repo, "ls-tree", "--name-only", "main").splitlines() == ["README.md", "post.md", "try-1.txt"]
        for label in ("try-2", "try-3"):
            assert not Path(get(label)["worktree"]).exists()
        p = ctl(data, "spawn", "--label", "nope", "--best-of", "2", "--", PY, "-c", "print(1)")
        assert p.returncode == 2 and "best of N needs a workspace" in p.stderr
        before = len(call(h.dd.socket, "list")["result"])
        p = ctl(
            data, "spawn", "--label", "mine", "--best-of", "2", "--domain", "post:1", "--repo", str(repo), "--", "true"
        )
        assert p.returncode == 2 and "every try would claim the same one" in p.stderr  # not one try then a refusal
        assert len(call(h.dd.socket, "list")["result"]) == before
    finally:
        h.stop()
        kill_leftover_sessions(data)


def test_a_worktree_deleted_by_hand_is_said_not_crashed_on(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "blog")
    data = tmp_path / "data"
    h = Headless(data)
    try:
        p = ctl(data, "spawn", "--label", "gone-1", "--repo", str(repo), "--", PY, "-c", "import time; time.sleep(2)")
        assert p.returncode == 0, p.stderr
        s = call(h.dd.socket, "get", ref="gone-1")["result"]
        wait_until(lambda: Path(s["worktree"], ".git").exists(), 10, "the worktree")
        shutil.rmtree(s["worktree"])
        wait_until(lambda: call(h.dd.socket, "get", ref="gone-1")["result"]["state"] == "done", 30, "its end")
        s = call(h.dd.socket, "get", ref="gone-1")["result"]
        assert "is gone (removed by hand?)" in s["merge_note"]
        assert call(h.dd.socket, "info")["result"]["pid"] == h.pid  # the runtime carries on
    finally:
        h.stop()
        kill_leftover_sessions(data)
