"""`crewtui import openclaw`: OpenClaw cron jobs (jobs.json or `automations list --json`) become a crew file.

The fixtures under tests/fixtures/openclaw/ follow OpenClaw's own types (src/cron/types.ts, the gateway
protocol's CronJobSchema, and the `cron list --json` page): the output must be valid TOML whose structure says
what each job became, what could not be carried over must be listed, and bad input must be one line, exit 2.
"""

from __future__ import annotations

import json
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crewtui.cli import main
from crewtui.config import parse_crew
from crewtui.config.openclaw import Conversion, convert_openclaw, detect, slug
from crewtui.config.tomltext import duration_ms, escape_template, toml_str
from crewtui.errors import BadInput
from crewtui.model import validate_label

FIXTURES = Path(__file__).parent / "fixtures" / "openclaw"
JOBS_JSON = FIXTURES / "jobs.json"
AUTOMATIONS = FIXTURES / "automations-list.json"


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def convert(path: Path) -> tuple[Conversion, dict[str, Any]]:
    conv = convert_openclaw(load(path), source=path.name)
    return conv, tomllib.loads(conv.toml)


def job(crew: dict[str, Any], name: str) -> dict[str, Any]:
    return next(j for j in crew["cron"] if j["name"] == name)


def a_job(**over: Any) -> dict[str, Any]:
    """One agentTurn job shaped like OpenClaw's CronJob."""
    base: dict[str, Any] = {
        "id": "0b7e5f1a-0000-4000-8000-000000000001",
        "name": "Daily digest",
        "enabled": True,
        "createdAtMs": 1767225600000,
        "updatedAtMs": 1767225600000,
        "schedule": {"kind": "cron", "expr": "0 8 * * *", "tz": "UTC"},
        "sessionTarget": "isolated",
        "wakeMode": "now",
        "payload": {"kind": "agentTurn", "message": "Write the digest."},
        "state": {},
    }
    base.update(over)
    return base


def store(*jobs: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "jobs": list(jobs)}


# ------------------------------------------------------------------------------------------------ shapes


def test_detects_both_shapes() -> None:
    assert detect(load(JOBS_JSON))[0] == "jobs.json"
    assert detect(load(AUTOMATIONS))[0] == "automations list"
    assert convert(JOBS_JSON)[0].shape == "jobs.json"
    assert convert(AUTOMATIONS)[0].shape == "automations list"


def test_jobs_json_structure() -> None:
    conv, crew = convert(JOBS_JSON)
    assert crew["crew"]["name"] == "openclaw"
    assert [j["name"] for j in crew["cron"]] == ["morning-brief", "inbox-sweep", "reminder", "queue-depth-probe"]
    assert (conv.imported, conv.disabled, conv.skipped) == (5, 1, 2)
    assert conv.summary() == "5 jobs imported (1 disabled: commented out), 2 skipped"

    brief = job(crew, "morning-brief")
    assert brief["schedule"] == {"kind": "cron", "expr": "0 7 * * *", "tz": "America/Los_Angeles"}
    assert brief["watchdog_after"] == "15m30s"  # timeoutSeconds 900 + the margin after exec's own deadline
    assert brief["spawn"] == {
        "agent": "ops-claude-opus-4-6-thinking-high-timeout-900s",
        "label": "morning-brief-{date}-{run}",
        "task": "Summarize overnight updates.",
    }
    agent = crew["agents"][brief["spawn"]["agent"]]
    assert agent["preset"] == "openclaw"
    assert agent["command"] == ["openclaw"]
    assert agent["args"] == ["--model", "anthropic/claude-opus-4-6", "--thinking", "high", "--timeout", "900"]

    sweep = job(crew, "inbox-sweep")
    assert sweep["schedule"] == {"kind": "every", "every": "15m", "anchor": datetime(2026, 1, 1, tzinfo=UTC)}
    assert sweep["spawn"]["agent"] == "ops"  # same OpenClaw agent, no overrides: the plain agent
    assert crew["agents"]["ops"] == {
        "preset": "openclaw",
        "command": ["openclaw"],
        "description": "OpenClaw agent 'ops'",
    }


def test_every_schedule_kind() -> None:
    _, crew = convert(JOBS_JSON)
    at = job(crew, "reminder")["schedule"]
    assert at == {"kind": "at", "at": datetime(2027, 2, 1, 16, 0, tzinfo=UTC)}
    assert job(crew, "inbox-sweep")["schedule"]["every"] == "15m"
    assert job(crew, "morning-brief")["schedule"]["kind"] == "cron"
    # croner's six-field form has the seconds first; croniter wants them last.
    assert job(crew, "queue-depth-probe")["schedule"]["expr"] == "*/15 * * * * 30"
    _, crew = convert(AUTOMATIONS)
    assert job(crew, "relay-morning")["schedule"] == {
        "kind": "cron",
        "expr": "0 9 * * 1-5",
        "tz": "Asia/Kolkata",
        "stagger": "2m",
    }
    assert job(crew, "cafe-uberblick-taglich")["schedule"] == {"kind": "every", "every": "1h30m"}
    # OpenClaw reads an `at` without an offset as UTC; the file says so explicitly.
    naive = next(j for j in crew["cron"] if j["schedule"]["kind"] == "at")
    assert naive["schedule"]["at"] == datetime(2027, 3, 1, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ({"kind": "at", "atMs": 1801497600000}, {"kind": "at", "at": datetime(2027, 2, 1, 16, 0, tzinfo=UTC)}),
        ({"kind": "every", "everyMs": 86400000}, {"kind": "every", "every": "1d"}),
        ({"kind": "every", "everyMs": 1500}, {"kind": "every", "every": "1500ms"}),
        (
            {"kind": "cron", "expr": "@daily", "tz": "Europe/Berlin"},
            {"kind": "cron", "expr": "0 0 * * *", "tz": "Europe/Berlin"},
        ),
        (
            {"kind": "at", "at": "2027-02-01T17:00:00+01:00"},
            {"kind": "at", "at": datetime(2027, 2, 1, 16, 0, tzinfo=UTC)},
        ),
    ],
)
def test_schedule_forms(schedule: dict[str, Any], expected: dict[str, Any]) -> None:
    crew = tomllib.loads(convert_openclaw(store(a_job(schedule=schedule))).toml)
    assert crew["cron"][0]["schedule"] == expected


def test_cron_without_tz_is_utc_and_said() -> None:
    conv = convert_openclaw(store(a_job(schedule={"kind": "cron", "expr": "0 6 * * 1"})))
    assert tomllib.loads(conv.toml)["cron"][0]["schedule"]["tz"] == "UTC"
    assert any("Gateway host's time zone" in u.reason for u in conv.unmapped)


# ---------------------------------------------------------------------------------------- payload kinds


def test_system_event_becomes_a_system_text() -> None:
    conv, crew = convert(JOBS_JSON)
    reminder = job(crew, "reminder")
    assert reminder["text"] == "Reminder: check the cron docs draft"
    assert "spawn" not in reminder
    assert "no OpenClaw session receives it" in conv.toml  # said beside the job


def test_command_payload_becomes_a_plain_argv_agent() -> None:
    _, crew = convert(JOBS_JSON)
    probe = job(crew, "queue-depth-probe")
    assert probe["watchdog_after"] == "2m"
    assert "task" not in probe["spawn"]
    agent = crew["agents"][probe["spawn"]["agent"]]
    # a brace in the argv stays literal: crewtui renders {task}-style fields in argv elements
    assert agent == {
        "command": ["sh", "-lc", "scripts/check-queue.sh {{fast}}"],
        "description": "command of OpenClaw job Queue depth probe",
        "cwd": "/srv/app",
        "env": {"QUEUE": "main"},
    }


def test_unsupported_jobs_are_skipped_with_their_reason() -> None:
    conv, _ = convert(JOBS_JSON)
    whole = {u.job: u.reason for u in conv.unmapped if u.whole_job}
    assert set(whole) == {"Build event stream", "Nightly report script"}
    assert "stream" in whole["Build event stream"]
    assert "script" in whole["Nightly report script"]
    conv, _ = convert(AUTOMATIONS)
    assert [u.reason for u in conv.unmapped if u.whole_job] == [
        "schedule kind 'on-exit' fires on a watched command, not on time; crewtui cannot express it"
    ]


def test_settings_crewtui_cannot_express_are_listed_and_commented() -> None:
    conv, _ = convert(AUTOMATIONS)
    relay = [u.reason for u in conv.unmapped if u.job == "RELAY Morning"]
    assert [r.split(" ", 1)[0].rstrip(":") for r in relay] == [
        "payload.toolsAllow",
        "payload.lightContext",
        "delivery",
        "failureAlert",
    ]
    cafe = [u.reason for u in conv.unmapped if u.job == "Café Überblick — Täglich"]
    assert any(r.startswith("sessionTarget 'main'") for r in cafe)
    assert any(r.startswith("wakeMode 'next-heartbeat'") for r in cafe)
    for reason in relay + cafe:
        assert f"# not carried over: {reason}" in conv.toml
    assert all(u.line().startswith(f"skipped: {u.job}: ") for u in conv.unmapped)


def test_disabled_job_is_written_commented_out() -> None:
    conv, crew = convert(JOBS_JSON)
    assert "weekly-deep-analysis" not in [j["name"] for j in crew["cron"]]
    assert any(u.job == "Weekly Deep Analysis" and "disabled" in u.reason for u in conv.unmapped)
    assert "research" in crew["agents"]  # its agent is there, so uncommenting the job is enough
    block = conv.toml.split("# OpenClaw job 'Weekly Deep Analysis'", 1)[1].split("\n\n", 1)[0]
    commented = "# [[cron]]" + block.split("# [[cron]]", 1)[1]
    assert all(line.startswith("#") for line in commented.splitlines())
    revived = tomllib.loads(conv.toml + "\n" + re.sub(r"(?m)^# ?", "", commented))
    weekly = job(revived, "weekly-deep-analysis")
    assert weekly["spawn"]["agent"] == "research"
    assert weekly["schedule"] == {"kind": "cron", "expr": "0 6 * * 1", "tz": "UTC"}


# ------------------------------------------------------------------------------------- names and escaping


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Morning brief", "morning-brief"),
        ("  UPPER Case  ", "upper-case"),
        ("Café Überblick — Täglich", "cafe-uberblick-taglich"),
        ("ops/report #2 (v1.5)", "ops-report-2-v1.5"),
        ("--leading.dots_", "leading.dots"),
        ("x" * 300, "x" * 100),
    ],
)
def test_names_become_labels(name: str, expected: str) -> None:
    assert slug(name) == expected
    validate_label(expected)
    crew = tomllib.loads(convert_openclaw(store(a_job(name=name))).toml)
    assert crew["cron"][0]["name"] == expected
    assert crew["cron"][0]["spawn"]["label"] == expected + "-{date}-{run}"
    validate_label(crew["cron"][0]["spawn"]["label"].format(date="2026-04-02", run="12345"))


def test_unicode_only_and_duplicate_names() -> None:
    crew = tomllib.loads(
        convert_openclaw(store(a_job(name="日报", id="A1-B2"), a_job(name="Report"), a_job(name="report"))).toml
    )
    assert [j["name"] for j in crew["cron"]] == ["job-a1-b2", "report", "report-2"]


@pytest.mark.parametrize(
    "message",
    [
        "Say \"hello\" and 'bye'",
        "line one\nline two\r\nline three\ttabbed",
        "C:\\Users\\me\\notes and a trailing backslash \\",
        "\"\"\"triple\"\"\" and '''single'''",
        "braces {item} and {{double}} and } alone",
        "controls \x00\x07\x1b[31m\x7f and bidi \u202eevil\u202c and emoji 🦞",
        "lone surrogate \ud800 here",
    ],
)
def test_messages_survive_toml(message: str) -> None:
    conv = convert_openclaw(store(a_job(payload={"kind": "agentTurn", "message": message})))
    task = tomllib.loads(conv.toml)["cron"][0]["spawn"]["task"]
    expected = message.replace("\ud800", "\ufffd")
    assert task == escape_template(expected)
    assert task.replace("{{", "{").replace("}}", "}") == expected
    assert "\u202e" not in conv.toml and "\x1b" not in conv.toml  # shown as escapes, never raw


def test_descriptions_and_names_in_comments_stay_one_line() -> None:
    conv = convert_openclaw(store(a_job(name='Evil\n[[cron]]\nname = "x"', description="two\nlines\r\x1b[2J")))
    crew = tomllib.loads(conv.toml)
    assert [j["name"] for j in crew["cron"]] == ["evil-cron-name-x"]
    assert "\x1b" not in conv.toml


def test_toml_str_round_trips() -> None:
    for text in ['a"b', "a\\b", "a\nb", "\x00\x1f\x7f", "\u2028\u2029", "ok é 🦞"]:
        assert tomllib.loads(f"v = {toml_str(text)}")["v"] == text


def test_durations() -> None:
    assert [duration_ms(ms) for ms in (1000, 60000, 900000, 5400000, 86400000, 90061000, 250)] == [
        "1s", "1m", "15m", "1h30m", "1d", "1d1h1m1s", "250ms",
    ]  # fmt: skip


# ------------------------------------------------------------------------------------- the real loader


def without_adapter_keys(text: str) -> str:
    """The file minus `preset` and `args`, the two agent keys the adapter work adds to the crew file."""
    return re.sub(r"(?m)^(preset|args) = .*\n", "", text)


@pytest.mark.parametrize("path", [JOBS_JSON, AUTOMATIONS], ids=lambda p: p.name)
def test_loader_accepts_everything_but_the_preset_keys(path: Path) -> None:
    conv = convert_openclaw(load(path), source=path.name)
    crew = parse_crew(without_adapter_keys(conv.toml), path.name)
    assert [j.name for j in crew.cron] == [j["name"] for j in tomllib.loads(conv.toml)["cron"]]
    assert crew.warnings() == []


@pytest.mark.parametrize("path", [JOBS_JSON, AUTOMATIONS], ids=lambda p: p.name)
def test_loader_accepts_preset_agents_with_args(path: Path) -> None:
    """The crew file's `preset` and `args` keys as written, under a preset the loader already knows."""
    text = convert_openclaw(load(path), source=path.name).toml.replace('preset = "openclaw"', 'preset = "jsonl"')
    crew = parse_crew(text, path.name)
    ops = crew.agents.get("ops-claude-opus-4-6-thinking-high-timeout-900s")
    if ops is not None:
        assert ops.args == ["--model", "anthropic/claude-opus-4-6", "--thinking", "high", "--timeout", "900"]


@pytest.mark.parametrize("path", [JOBS_JSON, AUTOMATIONS], ids=lambda p: p.name)
def test_loader_accepts_the_whole_file(path: Path) -> None:
    conv = convert_openclaw(load(path), source=path.name)
    crew = parse_crew(conv.toml, path.name)
    assert len(crew.cron) == len(tomllib.loads(conv.toml)["cron"])


# -------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "got a list"),
        ({"version": 1}, "got an object with no 'jobs' key"),
        ({"jobs": {}}, "got an object with 'jobs' as an object"),
        ({"version": 2, "jobs": []}, "expected a jobs.json store of version 1, got version 2"),
        (store("nope"), "jobs[0]: expected a job object, got a string"),
        (store({k: v for k, v in a_job().items() if k != "name"}), "jobs[0]: expected 'name' as a string, got nothing"),
        (store({k: v for k, v in a_job().items() if k != "id"}), "jobs[0] ('Daily digest'): expected 'id'"),
        (store(a_job(enabled="yes")), "expected 'enabled' as true or false"),
        (store(a_job(schedule=None)), "expected 'schedule' as an object"),
        (store(a_job(payload={"kind": "agentTurn"})), "payload: expected 'message' as a string, got nothing"),
        (store(a_job(payload={"kind": "systemEvent", "message": "x"})), "payload: expected 'text' as a string"),
        (store(a_job(schedule={"kind": "every", "everyMs": "15m"})), "expected 'everyMs' as a whole number"),
        (store(a_job(schedule={"kind": "cron"})), "schedule: expected 'expr' as a string"),
        (store(a_job(payload={"kind": "command", "argv": []})), "expected 'argv' as a non-empty list of strings"),
    ],
)
def test_bad_input_is_one_line(data: Any, message: str) -> None:
    with pytest.raises(BadInput) as info:
        convert_openclaw(data)
    assert message in info.value.message
    assert "\n" not in info.value.message


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ({"kind": "every", "everyMs": 500}, "at least 1s"),
        ({"kind": "cron", "expr": "61 * * * *", "tz": "UTC"}, "minute field"),
        ({"kind": "cron", "expr": "0 9 * * *", "tz": "Mars/Olympus"}, "IANA time zone"),
        ({"kind": "at", "at": "tomorrow"}, "not an ISO 8601 time"),
        ({"kind": "hourly"}, "unknown schedule kind 'hourly'"),
    ],
)
def test_schedules_crewtui_refuses_skip_the_job(schedule: dict[str, Any], reason: str) -> None:
    conv = convert_openclaw(store(a_job(schedule=schedule), a_job(name="Fine")))
    assert (conv.imported, conv.skipped) == (1, 1)
    assert reason in conv.unmapped[0].reason and conv.unmapped[0].whole_job


# --------------------------------------------------------------------------------------------------- CLI


def run(*args: str) -> Any:
    return CliRunner().invoke(main, ["import", "openclaw", *args], catch_exceptions=False)


def test_cli_prints_the_crew_file_and_the_skipped_list() -> None:
    result = run(str(JOBS_JSON))
    assert result.exit_code == 0
    assert tomllib.loads(result.stdout)["crew"]["name"] == "openclaw"
    assert result.stdout == convert_openclaw(load(JOBS_JSON), source="jobs.json").toml
    lines = result.stderr.splitlines()
    assert "skipped: Build event stream: schedule kind 'stream' fires on a watched command" in "\n".join(lines)
    assert all(line.startswith("skipped: ") for line in lines[:-1])
    assert lines[-1] == "5 jobs imported (1 disabled: commented out), 2 skipped"


def test_cli_writes_out_and_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "crew.toml"
    result = run(str(AUTOMATIONS), "-o", str(out))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == f"3 jobs imported, 1 skipped; wrote {out}"
    written = out.read_text(encoding="utf-8")
    assert tomllib.loads(written)["agents"]["main"]["preset"] == "openclaw"

    out.write_text("mine", encoding="utf-8")
    result = run(str(AUTOMATIONS), "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr == f"crewtui: {out}: already exists; use --force to overwrite it\n"
    assert out.read_text(encoding="utf-8") == "mine"

    result = run(str(AUTOMATIONS), "-o", str(out), "--force")
    assert result.exit_code == 0
    assert out.read_text(encoding="utf-8") == written
    assert [p.name for p in tmp_path.iterdir()] == ["crew.toml"]  # no temporary file left behind


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    def write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    missing_field = store({k: v for k, v in a_job().items() if k != "payload"})
    return {
        "missing": (tmp_path / "nope.json", "no such file"),
        "directory": (tmp_path, "expected a JSON file, got a directory"),
        "not json": (write("x.json", b"{jobs: [}"), "not valid JSON (Expecting property name"),
        "not utf-8": (write("latin.json", b'{"jobs": ["\xe9"]}'), "expected UTF-8 text"),
        "wrong shape": (write("shape.json", b'{"crons": []}'), "expected OpenClaw cron jobs"),
        "a list": (write("list.json", b"[1, 2]"), "expected OpenClaw cron jobs"),
        "missing field": (write("field.json", json.dumps(missing_field).encode()), "expected 'payload' as an object"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "directory", "not json", "not utf-8", "wrong shape", "a list", "missing field"]
)
def test_cli_bad_input_is_one_line_exit_2_nothing_written(tmp_path: Path, case: str) -> None:
    path, message = bad_files(tmp_path)[case]
    out = tmp_path / "out" / "crew.toml"
    out.parent.mkdir()
    result = run(str(path), "-o", str(out))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("crewtui: ")
    assert message in result.stderr
    assert not out.exists()


def test_cli_output_into_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    result = run(str(JOBS_JSON), "-o", str(tmp_path / "no" / "crew.toml"))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no such directory" in result.stderr
