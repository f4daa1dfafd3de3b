"""How `crewtui ctl` prints what agents wrote, run for real against a real headless runtime: a person reads each
line with its escape sequences removed and its other control characters made visible; `--json` carries the
exact text, with what a terminal would act on escaped (the same JSON value)."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time

from tests.conftest import PY
from tests.test_ctl import ENV, Runtime, ctl, runtime  # noqa: F401  (runtime is a fixture)

LINES = [
    "\x1b[32mgreen\x1b[0m and \x1b]8;;https://example.com\x1b\\a link\x1b]8;;\x1b\\",
    "bell\x07 backspace\x08 and a lone escape\x1b",
    "tab\tkept",
    "right-to-left \u202eoverride, 8-bit CSI \x9b2J, NEL \x85 and DEL \x7f",
]
SHOWN = [
    "green and a link",
    "bell␇ backspace␈ and a lone escape␛",
    "tab\tkept",
    "right-to-left \\u202eoverride, 8-bit CSI , NEL \\x85 and DEL ␡",
]
# Prints the lines, then waits (so `list` shows the last one as the session's last output).
AGENT = textwrap.dedent(
    f"""
    import sys, time
    for line in {LINES!r}:
        print(line, flush=True)
    time.sleep(600)
    """
)
# What JSON leaves raw that a terminal acts on: DEL, the C1 controls, the bidi embeddings, overrides and isolates.
RAW_IN_JSON = {chr(c) for c in range(0x7F, 0xA0)} | set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def spawn_agent(rt: Runtime) -> dict:
    p = ctl(rt.data_dir, "spawn", "--label", "printer", "--json", "--", PY, "-c", AGENT)
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    deadline = time.time() + 15
    while len(json.loads(ctl(rt.data_dir, "history", "printer", "--json").stdout)["lines"]) < len(LINES):
        assert time.time() < deadline, "the agent's lines"
        time.sleep(0.1)
    return s


def test_history_and_list_show_agent_lines_without_escapes_and_with_controls_visible(runtime: Runtime) -> None:  # noqa: F811
    s = spawn_agent(runtime)
    history = ctl(runtime.data_dir, "history", "printer")
    assert history.returncode == 0, history.stderr
    assert history.stdout.splitlines() == [f"# {s['key']} printer (running)", *SHOWN]
    listed = ctl(runtime.data_dir, "list").stdout.splitlines()
    row = next(line for line in listed if " printer " in line)
    assert row.endswith(SHOWN[-1][:60])


def test_json_output_is_the_exact_text_with_terminal_controls_escaped(runtime: Runtime) -> None:  # noqa: F811
    s = spawn_agent(runtime)
    watch = subprocess.Popen(
        [PY, "-m", "crewtui", "ctl", "--data-dir", str(runtime.data_dir), "watch", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert watch.stderr.readline() == "watching (Ctrl-C to stop)\n"  # subscribed
        steer = "steer with C1 \x9b2J and an override \u202e"
        assert ctl(runtime.data_dir, "send", "printer", steer).returncode == 0
        while True:
            line = watch.stdout.readline()
            assert line, "the watcher ended"
            if '"session_steered"' in line:
                break
    finally:
        watch.terminate()
        watch.wait(timeout=10)
    outputs = {
        "history --json": ctl(runtime.data_dir, "history", "printer", "--json").stdout,
        "list --json": ctl(runtime.data_dir, "list", "--json").stdout,
        "watch --json": line,
    }
    for what, out in outputs.items():
        assert not set(out) & RAW_IN_JSON, what
    assert json.loads(outputs["history --json"])["lines"] == LINES
    listed = json.loads(outputs["list --json"])
    assert next(x for x in listed if x["key"] == s["key"])["last_line"] == LINES[-1]
    assert json.loads(outputs["watch --json"])["text"] == steer


def test_an_agents_conversation_prints_as_turns_cleaned_of_escapes(tmp_path) -> None:
    """`ctl history` of a preset agent: who said what, one line each, never the raw JSON (--raw gives that)."""
    agent = tmp_path / "agent.py"
    agent.write_text(
        textwrap.dedent(
            """
            import json
            def say(**kw): print(json.dumps(kw), flush=True)
            say(type="say", text="I will \\x1b[31mclean\\x1b[0m up")
            say(type="tool", name="Bash", input={"command": "rm -rf build"})
            say(type="tool_result", text="removed\\nall of it")
            say(type="result", result={"ok": True}, text="done")
            """
        )
    )
    crew = tmp_path / "crew.toml"
    crew.write_text(f'[agents.mine]\npreset = "jsonl"\ncommand = ["{PY}", "{agent}"]\n')
    rt = Runtime(tmp_path / "data", crew)
    try:
        assert ctl(rt.data_dir, "spawn", "--label", "conv-1", "--agent", "mine", "--task", "x").returncode == 0
        deadline = time.time() + 20
        while json.loads(ctl(rt.data_dir, "info", "conv-1").stdout)["state"] != "done":
            assert time.time() < deadline, "the session did not end"
            time.sleep(0.1)
        out = ctl(rt.data_dir, "history", "conv-1").stdout.splitlines()
        assert out[1:] == [
            " agent I will clean up",  # the colour codes gone, as in every line ctl prints
            '  tool Bash {"command":"rm -rf build"}',
            "    -> removed all of it",
        ]
        raw = ctl(rt.data_dir, "history", "conv-1", "--raw").stdout
        assert '"type": "tool"' in raw
    finally:
        rt.stop()
