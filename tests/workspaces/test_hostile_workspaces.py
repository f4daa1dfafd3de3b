"""A hostile pass on workspaces, on real git repositories in tmp_path: labels git cannot take as branch names or
that name a branch of the user's, the repository's own hooks and fsmonitor, an agent that switches branches or
deletes its `.git` (inside another repository), a symlink an agent leaves where the crew copies a file, and
`check`/`setup` commands that leave a process holding their output, run over their time or print megabytes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from crewtui.errors import BadInput, Conflict
from crewtui.model import SpawnRequest
from crewtui.runtime.orchestrator import Orchestrator
from crewtui.workspaces import commands, merging, worktrees
from crewtui.workspaces.git import first_line, git, out
from tests.conftest import wait_for
from tests.faults.helpers import ENV, PY, Headless, call, ctl, kill_leftover_sessions, wait_until
from tests.workspaces.test_git_workspaces import make_repo, session


def test_the_runtimes_git_runs_no_hooks_and_no_fsmonitor_of_the_repository(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    log = tmp_path / "ran.log"
    hooks = repo / ".git" / "hooks"
    names = ("post-checkout", "pre-commit", "prepare-commit-msg", "post-commit", "post-merge", "reference-transaction")
    for name in names:
        (hooks / name).write_text(f"#!/bin/sh\necho {name} >> {log}\n")
        (hooks / name).chmod(0o755)
    (hooks / "commit-msg").write_text(f"#!/bin/sh\necho commit-msg >> {log}\nexit 1\n")  # refuses every message
    (hooks / "commit-msg").chmod(0o755)
    monitor = tmp_path / "fsmonitor.sh"
    monitor.write_text(f"#!/bin/sh\necho fsmonitor >> {log}\n")
    monitor.chmod(0o755)
    git(repo, "config", "core.fsmonitor", str(monitor))
    git(repo, "checkout", "--quiet", "-b", "work")
    wt, branch, start = session(repo, tmp_path, "a")
    (wt / "a.md").write_text("a\n")
    assert worktrees.commit_all(wt, "crewtui: a", branch)
    with merging.lock(repo):
        r = merging.merge_one(repo, tmp_path / "m", "main", branch, start, "merge a")
    assert r.outcome == "merged"
    assert out(repo, "show", "main:a.md") == "a"
    assert not log.exists(), log.read_text()


@pytest.mark.parametrize("label", ["a..b", "fix.lock", "fix."])
def test_a_label_git_cannot_take_as_a_branch_is_refused(tmp_path: Path, label: str) -> None:
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(BadInput, match="is not a branch name git accepts"):
        worktrees.check_new_branch(repo, worktrees.branch_for(label))


def test_a_branch_in_the_way_of_crew_label_is_said(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "branch", "crew/fix/old")  # the user's: no branch crew/fix can be made beside it
    with pytest.raises(BadInput, match=r"a branch crew/fix/old exists in .*: git cannot make crew/fix beside it"):
        worktrees.check_new_branch(repo, "crew/fix")
    git(repo, "branch", "-D", "crew/fix/old")
    git(repo, "branch", "crew")  # nor any crew/<label> beside a branch named crew
    with pytest.raises(BadInput, match=r"a branch crew exists in .*: git cannot make crew/other beside it"):
        worktrees.check_new_branch(repo, "crew/other")


def test_git_errors_say_gits_reason_not_its_progress() -> None:
    said = "Preparing worktree (new branch 'crew/a..b')\nfatal: 'crew/a..b' is not a valid branch name\n"
    assert first_line(said) == "'crew/a..b' is not a valid branch name"


def test_spawning_onto_a_branch_that_exists_or_cannot_be_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "blog")
    git(repo, "checkout", "--quiet", "-b", "crew/mine")  # the user's own branch, with the user's work on it
    (repo / "mine.md").write_text("the user's work\n")
    git(repo, "add", "mine.md")
    git(repo, "commit", "--quiet", "-m", "mine", identity=True)
    git(repo, "checkout", "--quiet", "main")
    mine = out(repo, "rev-parse", "crew/mine")
    data = tmp_path / "data"
    h = Headless(data)
    try:
        for label, said in (
            ("mine", "a branch crew/mine already exists"),
            ("a..b", "not a branch name git accepts"),
            ("fix.lock", "not a branch name git accepts"),
        ):
            p = ctl(data, "spawn", "--label", label, "--repo", str(repo), "--", PY, "-c", "open('x','w').write('x')")
            assert p.returncode == 2 and said in p.stderr and p.stderr.count("\n") == 1, p.stderr
        assert call(h.dd.socket, "list")["result"] == []
        assert out(repo, "rev-parse", "crew/mine") == mine  # never taken over, never committed on
        assert not (data / "worktrees").exists() or not any((data / "worktrees").iterdir())
    finally:
        h.stop()
        kill_leftover_sessions(data)


SWITCHER = (
    "import subprocess; subprocess.run(['git', 'checkout', '-q', 'feature'], check=True); "
    "open('agent.txt', 'w').write('on the wrong branch')"
)


def test_an_agent_that_switches_branches_gets_nothing_committed_on_the_other_branch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "blog")
    git(repo, "branch", "feature")  # the user's
    feature = out(repo, "rev-parse", "feature")
    data = tmp_path / "data"
    h = Headless(data)
    try:
        p = ctl(data, "spawn", "--label", "sw-1", "--repo", str(repo), "--", PY, "-c", SWITCHER)
        assert p.returncode == 0, p.stderr
        wait_until(lambda: call(h.dd.socket, "get", ref="sw-1")["result"]["state"] == "done", 30, "its end")
        s = call(h.dd.socket, "get", ref="sw-1")["result"]
        assert "its worktree is on feature, not on crew/sw-1: nothing committed" in s["merge_note"]
        assert out(repo, "rev-parse", "feature") == feature  # the user's branch has no runtime commit
        assert Path(s["worktree"], "agent.txt").exists()  # the agent's file is left where it is, uncommitted
    finally:
        h.stop()
        kill_leftover_sessions(data)


def test_a_worktree_whose_git_is_gone_commits_nothing_in_the_repository_around_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    outer = tmp_path / "home"  # the data dir lives in a repository of its own (dotfiles in ~, say)
    outer.mkdir()
    git(outer, "init", "--quiet")
    wt = outer / "worktrees" / "c"
    worktrees.create(repo, "main", "crew/c", wt, [])
    (wt / ".git").unlink()  # the agent deleted it
    (wt / "z.md").write_text("z\n")
    with pytest.raises(BadInput, match="is no longer a git worktree"):
        worktrees.commit_all(wt, "crewtui: c", "crew/c")
    assert git(outer, "rev-parse", "--verify", "--quiet", "HEAD", check=False).returncode != 0  # no commit there
    assert git(outer, "diff", "--cached", "--name-only").stdout == ""  # nothing staged either


def test_a_copied_file_never_goes_through_a_symlink_the_agent_left(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {".gitignore": ".env\nconf/\n", "a.txt": "a\n"})
    (repo / ".env").write_text("SECRET=1\n")
    (repo / "conf").mkdir()
    (repo / "conf" / "local.toml").write_text("x = 1\n")
    victim = tmp_path / "bashrc"
    victim.write_text("the user's own file\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    wt = tmp_path / "worktrees" / "d"
    worktrees.create(repo, "main", "crew/d", wt, [".env"])
    (wt / ".env").unlink()
    (wt / ".env").symlink_to(victim)  # the agent's doing; then a retry makes the worktree again
    worktrees.create(repo, "main", "crew/d", wt, [".env"])
    assert victim.read_text() == "the user's own file\n"
    assert not (wt / ".env").is_symlink() and (wt / ".env").read_text() == "SECRET=1\n"
    (wt / "conf").symlink_to(outside)
    with pytest.raises(BadInput, match="conf is a symlink in the worktree"):
        worktrees.create(repo, "main", "crew/d", wt, ["conf/local.toml"])
    assert list(outside.iterdir()) == []


def test_a_check_that_leaves_a_process_holding_its_output_does_not_hold_the_merge(tmp_path: Path) -> None:
    t0 = time.monotonic()
    assert merging._run_check(["sh", "-c", "sleep 30 & echo started; exit 0"], tmp_path) is None
    failed = merging._run_check(["sh", "-c", "sleep 30 & echo tests failed; exit 1"], tmp_path)
    assert failed == "check exited 1: tests failed"
    assert time.monotonic() - t0 < 10


def test_a_command_over_its_time_is_killed_with_its_children_and_megabytes_cost_only_a_tail(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    t0 = time.monotonic()
    ran = commands.run(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; echo waiting; wait"], tmp_path, 1.0, 100)
    assert ran.code is None and ran.tail == "waiting" and time.monotonic() - t0 < 10
    child = int(pid_file.read_text())
    wait_until(lambda: not _alive(child), 5, "the command's child to be killed with it")
    ran = commands.run(
        [PY, "-c", "import sys; sys.stdout.write('x' * 20_000_000 + 'END'); sys.exit(3)"], tmp_path, 60, 50
    )
    assert ran.code == 3 and len(ran.tail) == 50 and ran.tail.endswith("END")
    assert merging._run_check(["no-such-program-here"], tmp_path) == "check: no-such-program-here not found"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


async def test_a_merge_asked_while_a_discard_removes_the_branch_is_refused(
    make_orch: Callable[..., asyncio.Future[Orchestrator]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "blog")
    git(repo, "checkout", "--quiet", "-b", "work")
    o = await make_orch()
    s = await o.spawn(
        SpawnRequest(label="d-1", argv=[PY, "-c", "open('d.txt', 'w').write('d')"], repo=str(repo), base="main")
    )
    await wait_for(lambda: o.table.sessions[s.key].state.value == "done" and bool(o.table.sessions[s.key].changes), 30)
    tip = out(repo, "rev-parse", "main")
    removing = threading.Event()
    remove = worktrees.remove

    def slow_remove(*args: Any) -> None:  # a big worktree takes a while to go
        removing.set()
        time.sleep(1.0)
        remove(*args)

    monkeypatch.setattr(worktrees, "remove", slow_remove)
    discard = asyncio.create_task(o.discard("d-1"))
    await wait_for(removing.is_set, 10, "the removal to start")
    with pytest.raises(Conflict, match="being discarded"):
        await o.merge("d-1")
    with pytest.raises(Conflict, match="being discarded"):
        await o.discard("d-1")
    assert (await discard).merge == "discarded"
    await asyncio.sleep(0.5)
    assert out(repo, "rev-parse", "main") == tip  # its work never went in
    assert (await o.get("d-1")).merge == "discarded"


def test_an_index_lock_a_killed_agents_git_left_is_cleared_at_the_end(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    wt, branch, start = session(repo, tmp_path, "l")
    (wt / "l.md").write_text("the agent's work\n")
    lock = Path(out(wt, "rev-parse", "--absolute-git-dir")) / "index.lock"
    lock.write_text("")  # its git was killed mid-add (a watchdog, a kill)
    assert worktrees.commit_all(wt, "crewtui: l", branch)
    assert worktrees.changes(repo, start, branch).files == [{"path": "l.md", "insertions": 1, "deletions": 0}]
    assert not lock.exists()


def test_names_read_as_they_are_and_escapes_stay_quoted_whatever_the_users_diff_settings(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "config", "diff.noprefix", "true")
    wt, branch, start = session(repo, tmp_path, "n")
    (wt / "café.md").write_text("c\n")
    (wt / "\x1b[31mred\x1b[0m.txt").write_text("r\n")
    worktrees.commit_all(wt, "crewtui: n", branch)
    paths = [f["path"] for f in worktrees.changes(repo, start, branch).files]
    assert paths == ['"\\033[31mred\\033[0m.txt"', "café.md"]
    text = worktrees.diff(repo, start, branch)
    assert "\x1b" not in text and "diff --git a/café.md b/café.md" in text


def test_a_bare_repository_and_a_missing_into_are_one_line(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(repo), str(bare))
    with pytest.raises(BadInput, match="is a bare repository"):
        worktrees.repo_root(bare)
    path = tmp_path / "crew.toml"
    path.write_text(f'[agents.w]\ncommand = ["true"]\n[agents.w.workspace]\nrepo = "{repo}"\ninto = "release"\n')
    data = tmp_path / "data"
    h = Headless(data, path)
    try:
        p = ctl(data, "spawn", "--label", "w-1", "--agent", "w")
        assert p.returncode == 2 and "no branch 'release'" in p.stderr and p.stderr.count("\n") == 1, p.stderr
        assert call(h.dd.socket, "list")["result"] == []
    finally:
        h.stop()
        kill_leftover_sessions(data)


def test_the_files_the_crew_copies_in_never_go_into_the_branch_nor_count_as_work(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"a.txt": "a\n"})  # no .gitignore: git would take .env as a new file
    (repo / ".env").write_text("SECRET=1\n")
    (repo / "conf").mkdir()
    (repo / "conf" / "local.toml").write_text("token = 2\n")
    copied = [".env", "conf/local.toml"]
    wt, branch = tmp_path / "worktrees" / "e", "crew/e"
    start = worktrees.create(repo, "main", branch, wt, copied)
    (wt / "a.txt").write_text("a\nb\n")
    assert worktrees.commit_all(wt, "crewtui: e", branch, copied)
    assert [f["path"] for f in worktrees.changes(repo, start, branch).files] == ["a.txt"]
    assert (wt / ".env").read_text() == "SECRET=1\n"  # still there for the agent, never committed
    assert worktrees.unmerged_work(repo, wt, branch, branch, copied) is None  # nothing lost by removing it
    assert worktrees.unmerged_work(repo, wt, branch, branch) == "2 uncommitted changes in it"


def test_a_hung_setup_is_killed_with_its_session_and_at_runtime_stop(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "blog")
    pids = tmp_path / "setup.pids"
    path = tmp_path / "crew.toml"
    hang = ["sh", "-c", f"echo $$ >> {pids}; exec sleep 600"]  # `npm ci` waiting on a network that never answers
    path.write_text(
        f'[agents.s]\ncommand = ["true"]\n[agents.s.workspace]\nrepo = "{repo}"\nsetup = {hang!r}\n'.replace("'", '"')
    )
    data = tmp_path / "data"
    h = Headless(data, path)
    spawns: list[subprocess.Popen[str]] = []
    try:
        for label in ("s-1", "s-2"):
            argv = [PY, "-m", "crewtui", "ctl", "--data-dir", str(data), "spawn", "--label", label, "--agent", "s"]
            spawns.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV))
        wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, 30, "both setups to start")
        t0 = time.monotonic()
        p = ctl(data, "kill", "s-1")
        assert p.returncode == 0 and time.monotonic() - t0 < 15, p.stderr
        reason = call(h.dd.socket, "get", ref="s-1")["result"]["reason"]
        assert "workspace setup sh stopped: the session was killed" in reason
        t0 = time.monotonic()
        h.stop()  # s-2's setup still runs: the runtime stops anyway
        assert time.monotonic() - t0 < 15
        for pid in map(int, pids.read_text().split()):
            wait_until(lambda pid=pid: not _alive(pid), 5, f"setup {pid} to be killed")
    finally:
        for sp in spawns:
            sp.kill()
            sp.wait()
        h.stop()
        kill_leftover_sessions(data)
        for pid in map(int, pids.read_text().split()) if pids.exists() else ():
            if _alive(pid):
                os.kill(pid, 9)


def test_a_diff_of_a_huge_file_is_cut_saying_so_not_refused_or_held_whole(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    wt, branch, start = session(repo, tmp_path, "big")
    (wt / "big.txt").write_text("".join(f"line {i} {'x' * 60}\n" for i in range(40_000)))  # 2.8 MB
    worktrees.commit_all(wt, "crewtui: big", branch)
    text = worktrees.diff(repo, start, branch, limit=1 << 20)
    body, said = text.rstrip("\n").rsplit("\n", 1)
    assert len(body.encode()) <= 1 << 20 and body.endswith("x" * 60)  # cut at a line's end
    assert said == f"… the diff is cut at 1 MiB: git -C {repo} diff {start[:12]} {branch} shows all of it"
    assert worktrees.diff(repo, start, branch, stat=True).startswith(" big.txt | 40000 +")


def test_a_runtime_stop_does_not_wait_for_a_hung_check_and_the_merge_resumes_after(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "blog")
    git(repo, "checkout", "--quiet", "-b", "work")
    pids = tmp_path / "check.pids"
    hang = ["sh", "-c", f"echo $$ >> {pids}; test -f {tmp_path}/go || exec sleep 600"]
    path = tmp_path / "crew.toml"
    path.write_text(
        f'[agents.c]\ncommand = ["sh", "-c", "echo c > c.md"]\n[agents.c.workspace]\nrepo = "{repo}"\n'
        f'base = "main"\nmerge = "auto"\ncheck = {hang!r}\n'.replace("'", '"')
    )
    data = tmp_path / "data"
    h = Headless(data, path)
    try:
        tip = out(repo, "rev-parse", "main")
        assert ctl(data, "spawn", "--label", "c-1", "--agent", "c").returncode == 0
        wait_until(pids.exists, 30, "the check to start")
        t0 = time.monotonic()
        h.stop()
        assert time.monotonic() - t0 < 15
        wait_until(lambda: not _alive(int(pids.read_text().split()[0])), 5, "the check to be killed")
        assert out(repo, "rev-parse", "main") == tip
        (tmp_path / "go").touch()
        h = Headless(data, path)
        wait_until(lambda: call(h.dd.socket, "get", ref="c-1")["result"]["merge"] == "merged", 30, "the merge")
        assert out(repo, "show", "main:c.md") == "c"
    finally:
        h.stop()
        kill_leftover_sessions(data)
        for pid in map(int, pids.read_text().split()) if pids.exists() else ():
            if _alive(pid):
                os.kill(pid, 9)


def test_work_done_in_a_merged_worktree_during_its_grace_is_not_removed_with_it(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "blog")
    git(repo, "checkout", "--quiet", "-b", "work")
    path = tmp_path / "crew.toml"
    path.write_text(
        f'[agents.g]\ncommand = ["sh", "-c", "echo g > g.md"]\n[agents.g.workspace]\nrepo = "{repo}"\n'
        'base = "main"\nmerge = "auto"\ncleanup_after = "2s"\n'
    )
    data = tmp_path / "data"
    h = Headless(data, path)
    try:
        assert ctl(data, "spawn", "--label", "g-1", "--agent", "g").returncode == 0
        wait_until(lambda: call(h.dd.socket, "get", ref="g-1")["result"]["merge"] == "merged", 30, "the merge")
        wt = Path(call(h.dd.socket, "get", ref="g-1")["result"]["worktree"])
        (wt / "follow-up.md").write_text("the user's follow-up, not committed yet\n")
        time.sleep(4)  # the grace is over
        assert (wt / "follow-up.md").exists()
        p = ctl(data, "sweep", "--dry-run")
        assert "keeps worktree of" in p.stdout and "g-1" in p.stdout and "1 uncommitted change in it" in p.stdout, (
            p.stdout
        )
    finally:
        h.stop()
        kill_leftover_sessions(data)


def test_two_runtimes_on_one_repository_take_turns_and_never_share_a_branch(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "blog")
    git(repo, "checkout", "--quiet", "-b", "work")
    agent = "import os; open(os.environ['CREWTUI_SESSION_LABEL'] + '.md', 'w').write('x')"
    runtimes = []
    try:
        for name in ("one", "two"):
            path = tmp_path / f"{name}.toml"
            path.write_text(
                f"[agents.e]\ncommand = {json.dumps([PY, '-c', agent])}\n[agents.e.workspace]\n"
                f'repo = {json.dumps(str(repo))}\nbase = "main"\nmerge = "auto"\ncheck = ["sleep", "0.3"]\n'
            )
            runtimes.append((tmp_path / f"data-{name}", Headless(tmp_path / f"data-{name}", path)))
        for i in range(1, 4):
            for data, _ in runtimes:
                assert ctl(data, "spawn", "--label", f"{data.name}-{i}", "--agent", "e").returncode == 0
        (data, h) = runtimes[1]
        p = ctl(data, "spawn", "--label", "data-one-1", "--agent", "e")  # the other runtime's label and branch
        assert p.returncode == 2 and "a branch crew/data-one-1 already exists" in p.stderr
        for data, h in runtimes:
            for i in range(1, 4):
                label = f"{data.name}-{i}"
                wait_until(
                    lambda h=h, label=label: call(h.dd.socket, "get", ref=label)["result"]["merge"] == "merged",
                    60,
                    label,
                )
        names = out(repo, "ls-tree", "--name-only", "main").splitlines()
        assert sorted(n for n in names if n.startswith("data-")) == sorted(
            f"data-{name}-{i}.md" for name in ("one", "two") for i in range(1, 4)
        )
        assert int(out(repo, "rev-list", "--merges", "--count", "main")) == 6
        assert git(repo, "fsck", "--no-progress").returncode == 0
    finally:
        for data, h in runtimes:
            h.stop()
            kill_leftover_sessions(data)


def test_a_tag_named_like_the_sessions_branch_does_not_change_its_diff(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    wt, branch, start = session(repo, tmp_path, "t")
    git(repo, "tag", "crew/t", start)  # git would read "crew/t" as this tag before the branch
    (wt / "t.md").write_text("t\n")
    worktrees.commit_all(wt, "crewtui: t", branch)
    assert [f["path"] for f in worktrees.changes(repo, start, branch).files] == ["t.md"]
    assert "+t" in worktrees.diff(repo, start, branch)
    assert worktrees.unmerged_work(repo, wt, branch, "main") == "1 commit on crew/t not in main"
