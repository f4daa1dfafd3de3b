"""The stale sweep and worktrees, in a real runtime on a real repository: it lists the worktrees of ended
sessions, removes those whose work is merged or that changed nothing (after the grace), and keeps, saying why,
those that hold work not merged: committed on the branch, or left uncommitted in the worktree after the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crewtui.workspaces.git import git
from tests.faults.helpers import PY, Headless, call, ctl, kill_leftover_sessions, wait_until
from tests.workspaces.test_git_workspaces import make_repo, snapshot

# edit-* sessions write their own notes file; look-* sessions change nothing.
AGENT = """
import pathlib, sys
label = sys.argv[1]
if label.startswith("edit-"):
    pathlib.Path("notes").mkdir(exist_ok=True)
    pathlib.Path("notes", label + ".md").write_text("notes of " + label + "\\n")
print("done")
"""


def crew(tmp_path: Path, repo: Path, grace: str) -> Path:
    path = tmp_path / "crew.toml"
    path.write_text(
        f"""
[crew]
name = "coders"

[agents.coder]
command = [{json.dumps(PY)}, "-c", {json.dumps(AGENT)}, "{{label}}"]

[agents.coder.workspace]
repo = {json.dumps(str(repo))}
base = "main"
merge = "manual"
cleanup_after = "{grace}"
"""
    )
    return path


def ended(h: Headless, labels: list[str]) -> dict[str, dict[str, Any]]:
    keys = {label: call(h.dd.socket, "spawn", label=label, agent="coder")["result"]["key"] for label in labels}

    def all_done() -> bool:
        return all(call(h.dd.socket, "get", ref=k)["result"]["state"] == "done" for k in keys.values())

    wait_until(all_done, 30, "the sessions to end")
    return {label: call(h.dd.socket, "get", ref=k)["result"] for label, k in keys.items()}


def branch_exists(repo: Path, branch: str) -> bool:
    return git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", check=False).returncode == 0


def test_the_sweep_removes_what_loses_nothing_and_keeps_work_not_merged(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "blog")
    git(repo, "checkout", "--quiet", "-b", "work")
    before = snapshot(repo)
    data = tmp_path / "data"
    h = Headless(data, crew(tmp_path, repo, grace="0s"))
    try:
        s = ended(h, ["edit-1", "look-1", "look-2"])
        assert s["edit-1"]["changes"]["commits"] == 1 and s["look-1"]["changes"]["commits"] == 0
        (Path(s["look-2"]["worktree"]) / "scratch.md").write_text("the user wrote here after it ended\n")

        preview = call(h.dd.socket, "sweep", dry_run=True)["result"]
        by_label = {i["label"]: i for i in preview}
        assert {label: (i["kind"], i["action"]) for label, i in by_label.items()} == {
            "look-1": ("worktree", "remove"),
            "edit-1": ("worktree", "keep"),
            "look-2": ("worktree", "keep"),
        }
        assert "1 commit on crew/edit-1 not in main" in by_label["edit-1"]["reason"]
        assert by_label["edit-1"]["reason"].endswith(": merge or discard it")
        assert "1 uncommitted change in it" in by_label["look-2"]["reason"]
        assert all(Path(s[label]["worktree"]).exists() for label in s)  # a dry run removes nothing

        out = ctl(data, "sweep", "--dry-run")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert any(line.startswith(f"would remove worktree of {s['look-1']['key']}") for line in lines)
        assert any(line.startswith(f"keeps worktree of {s['edit-1']['key']}") for line in lines)
        refused = ctl(data, "sweep")  # not at a terminal: it says what it would do and does nothing
        assert refused.returncode == 2 and "sweep would remove 1 worktree; add --yes" in refused.stderr

        done = ctl(data, "sweep", "--yes", "--json")
        assert done.returncode == 0, done.stderr
        assert [i["label"] for i in json.loads(done.stdout) if i["action"] == "remove"] == ["look-1"]
        assert not Path(s["look-1"]["worktree"]).exists() and not branch_exists(repo, "crew/look-1")
        assert Path(s["edit-1"]["worktree"], "notes", "edit-1.md").exists() and branch_exists(repo, "crew/edit-1")
        assert Path(s["look-2"]["worktree"], "scratch.md").exists() and branch_exists(repo, "crew/look-2")
        sweeps = [e for e in call(h.dd.socket, "events")["result"] if e["kind"] == "sweep_done"]
        assert [(e["killed"], e["removed"]) for e in sweeps] == [([], [s["look-1"]["key"]])]

        # Merged, edit-1's worktree is the sweep's to remove too (its own cleanup would, after the grace).
        call(h.dd.socket, "merge", ref="edit-1")
        wait_until(lambda: not branch_exists(repo, "crew/edit-1"), 30, "the merge and its cleanup")
        assert [i["label"] for i in call(h.dd.socket, "sweep", dry_run=True)["result"]] == ["look-2"]
        assert snapshot(repo) == before  # the user's checkout is untouched throughout
    finally:
        h.stop()
        kill_leftover_sessions(data)


def test_within_the_grace_a_worktree_that_loses_nothing_is_not_listed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "blog")
    data = tmp_path / "data"
    h = Headless(data, crew(tmp_path, repo, grace="1h"))
    try:
        s = ended(h, ["look-1", "edit-1"])
        preview = call(h.dd.socket, "sweep", dry_run=True)["result"]
        assert [(i["label"], i["action"]) for i in preview] == [("edit-1", "keep")]  # work not merged: always said
        assert Path(s["look-1"]["worktree"]).exists()
    finally:
        h.stop()
        kill_leftover_sessions(data)
