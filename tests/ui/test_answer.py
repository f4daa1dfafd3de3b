"""Sessions waiting on a person in the dashboard: `a` approves, `d` denies (with an optional message), a marked set
is approved after a confirm, errors are one line; the waiting filter (0), the sort, the header, and the steer prompt
saying how a preset agent takes a steer. On the fake runtime with agent sessions, and one on a real orchestrator
with a real `jsonl` agent that waits for a permission."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from textual.widgets import Input, Static

from crewtui.events import SessionAgentUpdate
from crewtui.model import SessionState, SpawnRequest, TokenCounts
from crewtui.ui.actions import ACTIONS, BINDINGS
from crewtui.ui.app import CrewApp, make_app
from crewtui.ui.book import SessionBook
from crewtui.ui.grouping import LeafNode, build_forest
from crewtui.ui.screens.answer import AnswerScreen
from crewtui.ui.screens.confirm import ConfirmScreen
from crewtui.ui.screens.help import key_span, keys_table
from crewtui.ui.screens.steer import SteerScreen, how_steered
from crewtui.ui.widgets.header import StatusHeader
from tests.conftest import PY, crew_from, wait_for
from tests.ui.conftest import fake_app, key_of, recording, settle
from tests.ui.fake_runtime import FakeRuntime

S = SessionState
SIZE = (140, 42)


async def select(app: CrewApp, pilot: Any, label: str) -> str:
    key = key_of(app, label)
    app.main_screen.session_tree.select_key(key)
    await pilot.pause()
    await pilot.pause()
    assert app.main_screen.session_tree.current is not None and app.main_screen.session_tree.current.id == key
    return key


def answers(app: CrewApp) -> list[tuple[str, bool, str | None, str | None]]:
    fake = app.runtime
    assert isinstance(fake, FakeRuntime)
    return [args for name, args in fake.calls if name == "answer"]


async def applied(app: CrewApp, pilot: Any) -> None:
    await pilot.pause(0.05)
    app.main_screen.flush_events()
    await pilot.pause()


def header_text(app: CrewApp) -> str:
    return str(app.main_screen.query_one("#status", StatusHeader).render())


# ------------------------------------------------------------------------------------------------ a


async def test_a_approves_the_selected_waiting_session_by_the_request_it_shows() -> None:
    app = fake_app(agents=True)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "3 need you" in header_text(app)
        key = await select(app, pilot, "code-review-pr-104")
        await pilot.press("a")
        await wait_for(lambda: bool(answers(app)), what="answer call")
        assert answers(app) == [(key, True, "toolu_01HfR3", None)]
        await applied(app, pilot)
        s = app.book.sessions[key]
        assert s.state == S.RUNNING and s.needs is None and s.activity == "thinking"
        assert "approved code-review-pr-104" in notes
        assert "2 need you" in header_text(app)
        # It went back to its place in its group, and the cursor went with it.
        assert app.main_screen.session_tree.current is not None
        await wait_for(lambda: app.main_screen.session_tree.current.id == key, what="cursor follows")  # type: ignore[union-attr]


async def test_a_on_a_session_that_does_not_wait_says_so_in_one_line() -> None:
    app = fake_app(agents=True)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select(app, pilot, "code-review-pr-103")
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("d")
        await pilot.pause()
    assert notes == ["code-review-pr-103 is running, not waiting for an answer"] * 2
    assert answers(app) == []


async def test_a_on_a_request_answered_meanwhile_is_refused_as_stale_in_one_line() -> None:
    app = fake_app(agents=True)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        key = await select(app, pilot, "code-review-pr-104")
        # The agent moved on to another request the dashboard has not heard of yet.
        fake = app.runtime
        assert isinstance(fake, FakeRuntime)
        fake.sessions[key].needs = {"kind": "permission", "id": "toolu_NEW", "tool": "Bash", "input": {}}
        await pilot.press("a")
        await wait_for(lambda: bool(notes), what="refusal")
    assert len(notes) == 1 and "\n" not in notes[0]
    assert notes[0] == "no pending request 'toolu_01HfR3' (stale?); pending: toolu_NEW"
    assert fake.sessions[key].state == S.WAITING  # nothing else was approved in its place


async def test_a_on_a_question_asks_for_the_answer() -> None:
    app = fake_app(agents=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        key = await select(app, pilot, "triage-email-2")
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, AnswerScreen)
        await pilot.press("enter")  # an empty answer is refused in the prompt
        await pilot.pause()
        assert "type the answer" in str(app.screen.query_one("#answer-error", Static).render())
        app.screen.query_one("#answer-text", Input).value = "p1"
        await pilot.press("enter")
        await wait_for(lambda: bool(answers(app)), what="answer call")
    assert answers(app) == [(key, True, "q1", "p1")]


async def test_a_on_marked_sessions_confirms_how_many_and_what_then_approves_them_all() -> None:
    app = fake_app(agents=True)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        keys = []
        for label in ("code-review-pr-104", "ops-deploy-api", "code-review-pr-103"):
            keys.append(await select(app, pilot, label))
            await pilot.press("space")
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        body = str(app.screen.query_one("#confirm-body", Static).render())
        assert "code-review-pr-104" in body and "rm -rf build" in body and "kubectl" in body
        assert "1 marked session not waiting: left alone" in body
        await pilot.press("n")  # cancel: nothing answered
        await pilot.pause()
        assert answers(app) == []
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(lambda: len(answers(app)) == 2, what="two answers")
        await applied(app, pilot)
        assert answers(app) == [(keys[0], True, "toolu_01HfR3", None), (keys[1], True, "call_7", None)]
        assert "approved 2 of 2 sessions" in notes
        assert app.book.marked == {keys[2]}  # the answered ones are unmarked


async def test_a_on_marked_sessions_none_waiting_says_so() -> None:
    app = fake_app(agents=True)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select(app, pilot, "code-review-pr-103")
        await pilot.press("space")
        await pilot.press("a")
        await pilot.pause()
    assert notes == ["none of the 1 marked session waits for an answer"]


# ------------------------------------------------------------------------------------------------ d


async def test_d_denies_with_a_message() -> None:
    app = fake_app(agents=True)
    notes = recording(app)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        key = await select(app, pilot, "code-review-pr-104")
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, AnswerScreen)
        await pilot.press(*"not now")
        await pilot.press("enter")
        await wait_for(lambda: bool(answers(app)), what="answer call")
        await applied(app, pilot)
    assert answers(app) == [(key, False, "toolu_01HfR3", "not now")]
    assert "denied code-review-pr-104: not now" in notes
    assert app.book.sessions[key].activity == "denied: not now"


async def test_d_without_a_message_and_escape_cancels() -> None:
    app = fake_app(agents=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        key = await select(app, pilot, "ops-deploy-api")
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, AnswerScreen)
        assert answers(app) == []
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(lambda: bool(answers(app)), what="answer call")
    assert answers(app) == [(key, False, "call_7", None)]


async def test_d_on_marked_sessions_denies_each_with_the_one_message() -> None:
    app = fake_app(agents=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        keys = []
        for label in ("code-review-pr-104", "ops-deploy-api"):
            keys.append(await select(app, pilot, label))
            await pilot.press("space")
        await pilot.press("d")
        await pilot.pause()
        assert isinstance(app.screen, AnswerScreen)
        assert "2 waiting sessions" in str(app.screen.query_one(".dialog-title", Static).render())
        app.screen.query_one("#answer-text", Input).value = "freeze until Monday"
        await pilot.press("enter")
        await wait_for(lambda: len(answers(app)) == 2, what="two answers")
    assert [(k, allow, msg) for k, allow, _, msg in answers(app)] == [
        (keys[0], False, "freeze until Monday"),
        (keys[1], False, "freeze until Monday"),
    ]


# ------------------------------------------------------------------------------------------------ the rest


async def test_0_shows_only_the_waiting_sessions() -> None:
    app = fake_app(agents=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("0")
        await pilot.pause()
        shown = {app.book.sessions[n[2:]].label for n in app.main_screen.session_tree.nodes if n.startswith("s:")}
    assert shown == {"code-review-pr-104", "triage-email-2", "ops-deploy-api"}


async def test_agent_updates_reach_the_row_the_group_and_the_header() -> None:
    app = fake_app(agents=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        key = key_of(app, "code-review-pr-103")
        fake = app.runtime
        assert isinstance(fake, FakeRuntime)
        fake.emit(
            SessionAgentUpdate(
                session=key,
                label="code-review-pr-103",
                activity="editing a.py",
                turns=2,
                tokens=TokenCounts(input=5000, output=900),
                cost_usd=1.5,
            )
        )
        await applied(app, pilot)
        tree = app.main_screen.session_tree
        row = str(tree.nodes["s:" + key].label)
        assert "editing a.py" in row and "$1.50" in row
        group = str(tree.nodes["g:code-review-pr"].label)
        assert "$1.89" in group and "$0.4794" not in group  # the sum moved with it
        assert "today $2.39" in header_text(app)


async def test_the_steer_prompt_says_how_a_preset_agent_takes_it() -> None:
    app = fake_app(agents=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await select(app, pilot, "code-review-pr-103")
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, SteerScreen)
        text = " ".join(str(w.render()) for w in app.screen.query(".dialog-text"))
    assert "claude-code takes this mid-run (joins the running turn)" in text
    fake = FakeRuntime()
    opencode = next(iter(fake.sessions.values())).model_copy(update={"preset": "opencode"})
    assert "continues the conversation on its next turn" in how_steered([opencode])
    plain_session = next(iter(fake.sessions.values()))
    assert how_steered([plain_session]).startswith("Lines go to the session's stdin")
    assert how_steered([opencode, plain_session]) == "Taken on their next turn by 1, on stdin by 1; 64 KiB a line."


def test_keys_come_from_the_one_registry() -> None:
    ids = {a.id: a for a in ACTIONS}
    assert (ids["approve"].key, ids["deny"].key, ids["state-waiting"].key) == ("a", "d", "0")
    keys = [b.key for b in BINDINGS]  # type: ignore[union-attr]
    assert len(keys) == len(set(keys)), "a key bound twice"
    help_text = str(keys_table().columns[1]._cells)  # type: ignore[attr-defined]
    assert "Approve:" in help_text and "Deny:" in help_text and "0 waiting" in help_text
    assert key_span(["1", "2", "3", "0"]) == "1-3,0"


def test_waiting_sessions_sort_to_the_top_of_their_group() -> None:
    items = [("k1", "pr-101"), ("k2", "pr-102"), ("k3", "pr-103"), ("k4", "solo")]
    forest = build_forest(items, first={"k3"})
    group = forest[0]
    assert [c.key for c in group.children if isinstance(c, LeafNode)] == ["k3", "k1", "k2"]  # type: ignore[union-attr]


def test_the_book_counts_waiting_and_todays_spend() -> None:
    book = SessionBook()
    fake = FakeRuntime(agents=True)
    book.load(fake.sessions.values())
    assert book.waiting() == 3 and book.has_agents()
    assert round(book.cost_today(fake.clock.now()) or 0, 4) == 0.9785
    assert book.cost_today(fake.clock.now() + 86400) is None  # tomorrow: nothing started yet


# ------------------------------------------------------------------------------------------------ a real agent

WAITING_AGENT = textwrap.dedent(
    """
    import json, sys
    def say(**kw): print(json.dumps(kw), flush=True)
    say(type="session", id="conv-1")
    say(type="say", text="I will clean the build first.")
    say(type="usage", input=100, output=20, cost_usd=0.0123)
    say(type="tool", name="Bash", input={"command": "rm -rf build"})
    say(type="needs", kind="permission", id="p1", tool="Bash", input={"command": "rm -rf build"})
    answer = json.loads(sys.stdin.readline())
    say(type="tool_result", text="removed" if answer.get("allow") else "refused")
    say(type="result", result={"ok": bool(answer.get("allow"))}, text="cleaned")
    """
)


async def test_a_approves_a_real_jsonl_agent_and_it_finishes(make_orch: Any, tmp_path: Path) -> None:
    agent = tmp_path / "waiter.py"
    agent.write_text(WAITING_AGENT)
    crew = f"""
        [crew]
        name = "t"

        [agents.mine]
        preset = "jsonl"
        command = ["{PY}", "{agent}"]
        """
    orch = await make_orch(crew_from(textwrap.dedent(crew)))
    s = await orch.spawn(SpawnRequest(label="clean-1", agent="mine", task="clean up"))
    await wait_for(lambda: orch.table.sessions[s.key].state == S.WAITING, what="waiting")
    app = make_app(orch)
    async with app.run_test(size=SIZE) as pilot:
        await app.loaded.wait()
        app.main_screen.flush_events()
        await pilot.pause()
        await wait_for(lambda: "s:" + s.key in app.main_screen.session_tree.nodes, what="row")
        app.main_screen.session_tree.select_key(s.key)
        await wait_for(lambda: app.main_screen.transcript.turns, what="turns shown")
        lines = [line.text for line in app.main_screen.transcript.lines]
        assert any("I will clean the build first." in line for line in lines)
        assert any("Bash" in line and "rm -rf build" in line for line in lines)
        assert not any(line.lstrip().startswith("{") for line in lines)  # never the raw JSON
        assert "1 need you" in header_text(app)
        await pilot.press("a")
        await orch.wait_ended(s.key, timeout=10)
        assert orch.table.sessions.get(s.key) is None or orch.table.sessions[s.key].state == S.DONE
        await wait_for(
            lambda: (app.main_screen.flush_events(), app.book.sessions[s.key].state == S.DONE)[1], what="row done"
        )
        assert "need you" in header_text(app) and "1 need you" not in header_text(app)
    assert (await orch.get(s.key)).result == {"ok": True}
