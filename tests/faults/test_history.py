"""Lists and stores at size: thousands of sessions, results of megabytes, a history longer than memory."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from crewtui.model import SessionState, SpawnRequest
from tests.conftest import PY, SLEEPER
from tests.faults.helpers import ENV, Headless, call, fill_history, wait_until

S = SessionState


def ctl(d: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "crewtui", "ctl", "--data-dir", str(d), *args], capture_output=True, text=True, timeout=120, env=ENV
    )


def test_ctl_lists_thousands_of_sessions_in_pages_and_never_one_unbounded_reply(tmp_path: Path) -> None:
    d = tmp_path / "data"
    fill_history(d, 7000, span=7 * 86400)
    h = Headless(d)
    try:
        # Everything: the client pages (a reply of 7,000 sessions was one line over the client's 4 MiB limit).
        p = ctl(d, "list", "--all", "--json")
        assert p.returncode == 0, p.stderr[-2000:]
        everything = json.loads(p.stdout)
        keys = [s["key"] for s in everything]
        assert len(keys) == 7000 and keys == sorted(keys) and len(set(keys)) == 7000
        # A page: the newest 100, then the 100 before them.
        newest = json.loads(ctl(d, "list", "--limit", "100", "--json").stdout)
        assert [s["key"] for s in newest] == keys[-100:]
        older = json.loads(ctl(d, "list", "--limit", "100", "--before", newest[0]["key"], "--json").stdout)
        assert [s["key"] for s in older] == keys[-200:-100]
        p = ctl(d, "list", "--limit", "5")
        assert p.returncode == 0 and "--before" in p.stderr and len(p.stdout.splitlines()) == 6  # header + 5
        failed = json.loads(ctl(d, "list", "--all", "--state", "failed", "--json").stdout)
        assert len(failed) == sum(1 for i in range(7000) if i % 17 == 0)
        assert json.loads(ctl(d, "list", "--live", "--json").stdout) == []
        # No single reply is unbounded: the runtime answers with a line under the cap, whatever is asked.
        whole = call(d / "control.sock", "list", timeout=60)
        assert whole["ok"] and len(whole["result"]) == 7000
    finally:
        h.stop()


def test_a_big_result_is_listed_as_its_size_and_given_whole_by_ctl_result(tmp_path: Path) -> None:
    d = tmp_path / "data"
    h = Headless(d)
    big = {"rows": ["x" * 1000] * 5000}  # about 5 MB of JSON
    prog = "import json; print(json.dumps({'rows': ['x' * 1000] * 5000}))"
    try:
        for i in range(3):  # several, so a listing would carry 15 MB if results were listed whole
            call(d / "control.sock", "spawn", label=f"big-{i}", argv=[PY, "-c", prog])
        wait_until(lambda: all(s["state"] == "done" for s in call(d / "control.sock", "list")["result"]), 30, "done")
        listed = json.loads(ctl(d, "list", "--json").stdout)
        assert all(s["result"] is None and s["result_bytes"] > 5_000_000 and s["trimmed"] == ["result"] for s in listed)
        p = ctl(d, "result", "big-1")
        assert p.returncode == 0 and json.loads(p.stdout) == big
        assert json.loads(ctl(d, "info", "big-2").stdout)["result"] == big
    finally:
        h.stop()


async def test_a_10_mb_result_line_is_kept_and_a_20_mb_one_refused_with_a_reason(make_orch) -> None:
    orch = await make_orch()
    kept = await orch.spawn(
        SpawnRequest(label="ten", argv=[PY, "-c", "import json; print(json.dumps({'blob': 'x' * 10_000_000}))"])
    )
    refused = await orch.spawn(
        SpawnRequest(label="twenty", argv=[PY, "-c", "import json; print(json.dumps({'blob': 'x' * 20_000_000}))"])
    )
    ten = await orch.wait_ended(kept.key, timeout=60)
    twenty = await orch.wait_ended(refused.key, timeout=60)
    assert ten.state == S.DONE and len(ten.result["blob"]) == 10_000_000 and ten.result_bytes > 10_000_000
    assert twenty.state == S.DONE and twenty.result is None
    assert "over the 16 MiB limit and was not kept" in (twenty.reason or "")


async def test_a_start_on_a_long_history_holds_only_what_it_works_with(make_orch, data_dir) -> None:
    first = await make_orch()
    live = [await first.spawn(SpawnRequest(label=f"live-{i}", argv=[PY, "-c", SLEEPER])) for i in range(3)]
    await first.stop()  # the live sessions run on
    fill_history(data_dir.root, 30_000, span=30 * 86400, start=live[0].created_at - 10)
    second = await make_orch()
    try:
        assert len(second.sessions) <= 3 + second.retention.keep_ended  # not 30,003
        assert all(second.sessions[s.key].state == S.RUNNING for s in live)  # re-adopted
        history = await second.list(ended=True)
        assert len(history) == 30_000  # the store still answers for all of them
        oldest = history[0]
        assert oldest.key not in second.sessions and (await second.get(oldest.key)).key == oldest.key
        page = await second.list(ended=True, limit=50, before=history[1000].key)
        assert [s.key for s in page] == [s.key for s in history[950:1000]]
        counts = await second.older(before=live[0].key)
        assert sum(counts.values()) == 30_000 and set(counts) >= {"blog", "scout", "mail"}
    finally:
        await second.kill(prefix="live-")
