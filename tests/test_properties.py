"""Property tests (hypothesis): no input crashes the crew file loader, label validation, templating, duration
parsing or schedule computation, and every rejection is one clear line of the documented error type."""

from __future__ import annotations

import json
import math
import string
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from crewtui.config import CrewConfig, ScheduleConfig, load_crew, parse_crew, render_command, render_template
from crewtui.errors import BadInput, ConfigError
from crewtui.model import LABEL_RE, parse_duration, validate_label
from crewtui.runtime.schedules import MAX_EPOCH, fires_between, format_duration, next_fire, plan_misfires

# Derandomized (a fixed seed per test) and without an example database: the same examples on every run.
SAME = dict(derandomize=True, database=None, deadline=None)
FAST = settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], **SAME)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, repr(text)
    return text


# ------------------------------------------------------------------------------------------ TOML for dicts


def toml_value(v: Any) -> str:
    """A tiny TOML writer (inline forms only): enough for any structure the strategies below build."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string (control characters come out as \\uXXXX)
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def toml_doc(d: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in d.items())


KNOWN_KEYS = [
    "name", "max_concurrent", "stale_after", "registry", "max_spawn_depth", "max_children", "kill_grace",
    "watchdog_after", "command", "pool", "env", "max_attempts", "description", "rate", "retry_on_exit",
    "retry_on_stderr", "backoff", "base", "max", "schedule", "kind", "at", "every", "anchor", "expr", "tz",
    "stagger", "misfire", "misfire_grace", "overlap", "deadline", "fire_at_start", "spawn", "action", "text",
    "agent", "label", "task", "domain", "items", "address",
]  # fmt: skip
DURATION_TEXT = st.one_of(
    st.sampled_from(["15m", "1h30m", "250ms", "0s", "2s", "-1s", "soon", "", "1e3s", "9" * 400 + "d", "1.5.5m"]),
    st.from_regex(r"\A[0-9.]{1,6}(ms|s|m|h|d|x)?\Z"),
)
CRON_FIELD = st.sampled_from(["*", "0", "59", "60", "*/5", "*/0", "1-5", "5-1", "L", "?", "H", "mon", "1,2", "-1", "a"])
SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    DURATION_TEXT,
    st.sampled_from(
        [
            "every",
            "cron",
            "at",
            "UTC",
            "Europe/Berlin",
            "Nowhere/City",
            "../etc",
            "writer",
            "sweep",
            "skip",
            "run_once",
            "run_all",
            "allow",
            "forbid",
            "replace",
            "{item}",
            "{x}",
            "{",
            "{{}}",
            "30/min",
            "0/s",
            "5/0s",
            "x-{item}-{run}",
        ]
    ),
    st.builds(lambda fs: " ".join(fs), st.lists(CRON_FIELD, min_size=0, max_size=8)),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
)
KEY = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(min_size=1, max_size=12))
VALUE = st.recursive(
    SCALAR.filter(lambda v: v is not None),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEY, inner, max_size=5)),
    max_leaves=20,
)
CREW_DICT = st.fixed_dictionaries(
    {},
    optional={
        "crew": st.dictionaries(KEY, VALUE, max_size=5),
        "agents": st.dictionaries(st.text(min_size=1, max_size=8), st.dictionaries(KEY, VALUE, max_size=5), max_size=3),
        "pools": st.dictionaries(st.text(min_size=1, max_size=8), st.dictionaries(KEY, VALUE, max_size=5), max_size=2),
        "cron": st.lists(st.dictionaries(KEY, VALUE, max_size=8), max_size=3),
        "backend": st.dictionaries(KEY, VALUE, max_size=3),
        "source": st.text(max_size=5),
    },
).flatmap(lambda d: st.dictionaries(KEY, VALUE, max_size=2).map(lambda extra: {**extra, **d}))


@FAST
@given(CREW_DICT)
def test_crew_loader_on_random_structures_returns_a_crew_or_one_config_error(data: dict[str, Any]) -> None:
    try:
        text = toml_doc(data)
    except TypeError:
        assume(False)
        return
    try:
        crew = parse_crew(text, source="fuzz.toml")
    except ConfigError as exc:
        assert one_line(exc).startswith("fuzz.toml: ")
        return
    assert isinstance(crew, CrewConfig)
    # What the loader accepts the runtime can use: durations are finite, labels of cron spawns valid.
    for seconds in (crew.crew.stale_after, crew.crew.kill_grace):
        assert math.isfinite(seconds) and seconds >= 0


@FAST
@given(st.text(max_size=400))
def test_crew_loader_on_random_text_returns_a_crew_or_one_config_error(text: str) -> None:
    try:
        parse_crew(text, source="fuzz.toml")
    except ConfigError as exc:
        assert one_line(exc).startswith("fuzz.toml: ")


@settings(max_examples=60, **SAME)
@given(st.binary(max_size=300))
def test_crew_file_of_random_bytes_returns_a_crew_or_one_config_error(tmp_path_factory, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("crew") / "crew.toml"
    path.write_bytes(raw)
    try:
        load_crew(path)
    except ConfigError as exc:
        assert one_line(exc).startswith(str(path))


@FAST
@given(
    st.sampled_from(["stale_after", "kill_grace", "watchdog_after"]),
    st.one_of(st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308 * 10]), DURATION_TEXT),
)
def test_crew_durations_are_finite_or_refused(key: str, value: Any) -> None:
    try:
        crew = parse_crew(f"[crew]\n{key} = {toml_value(value)}\n", source="d.toml")
    except ConfigError as exc:
        assert one_line(exc).startswith(f"d.toml: crew.{key}: ")
        return
    got = getattr(crew.crew, key)
    assert got is None or (math.isfinite(got) and got >= 0)


# ------------------------------------------------------------------------------------------ labels


@FAST
@given(
    st.one_of(
        st.text(max_size=140),
        st.from_regex(LABEL_RE.pattern, fullmatch=True),
        st.sampled_from(["../x", "a/b", "..", ".", "/etc", "a\x00b", "A", "a" * 129, ""]),
    )
)
def test_label_validation_accepts_only_safe_names(label: str) -> None:
    try:
        assert validate_label(label) == label
    except BadInput as exc:
        assert one_line(exc).startswith("invalid label ")
        return
    # An accepted label can never be a path: no separator, no dot-dot, not hidden, ASCII only.
    assert "/" not in label and "\0" not in label and not label.startswith(".") and label.isascii()
    assert 1 <= len(label) <= 128 and label == label.lower()


# ------------------------------------------------------------------------------------------ templates


FIELDS = {"item": "superada", "date": "2026-04-02", "time": "0900", "run": "3"}


@FAST
@given(st.text(alphabet=string.printable + "{}!:.[]é", max_size=60))
def test_render_template_renders_or_raises_one_config_error(template: str) -> None:
    try:
        out = render_template(template, FIELDS, "cron x: label")
    except ConfigError as exc:
        assert one_line(exc).startswith("cron x: label: ")
        return
    assert isinstance(out, str)


@FAST
@given(st.text(max_size=200))
def test_substituted_values_stay_one_argv_element_and_are_never_reread(task: str) -> None:
    argv = render_command(["agent", "--task", "{task}", "pre-{task}-post"], {"task": task})
    assert argv == ["agent", "--task", task, f"pre-{task}-post"]
    assert render_template("{item}", {"item": task}, "x") == task  # "{run}" inside a value stays literal


# ------------------------------------------------------------------------------------------ durations


@FAST
@given(
    st.one_of(
        DURATION_TEXT,
        st.text(max_size=20),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
        st.none(),
        st.lists(st.integers()),
    )
)
def test_parse_duration_returns_seconds_or_one_value_error(value: Any) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        assert one_line(exc).startswith("expected a duration")
        return
    assert isinstance(seconds, float) and seconds >= 0


@FAST
@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_format_duration_reads_back(seconds: float) -> None:
    text = format_duration(seconds)
    assert abs(parse_duration(text) - seconds) <= max(0.0005, seconds * 1e-9), (seconds, text)


# ------------------------------------------------------------------------------------------ schedules


ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"])
CRON_EXPR = st.builds(lambda fs: " ".join(fs), st.lists(CRON_FIELD, min_size=5, max_size=5))
MOMENT = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9000, 1, 1))


@st.composite
def schedules(draw: st.DrawFn) -> ScheduleConfig:
    kind = draw(st.sampled_from(["at", "every", "cron"]))
    data: dict[str, Any] = {"kind": kind, "tz": draw(ZONES)}
    if kind == "at":
        data["at"] = draw(MOMENT)
    elif kind == "every":
        data["every"] = draw(st.one_of(st.floats(min_value=0.001, max_value=1e7), st.sampled_from(["1s", "15m", "7d"])))
        if draw(st.booleans()):
            data["anchor"] = draw(MOMENT)
    else:
        data["expr"] = draw(CRON_EXPR)
    if kind != "at" and draw(st.booleans()):
        data["stagger"] = draw(st.floats(min_value=0, max_value=3600))
    try:
        return ScheduleConfig.model_validate(data)
    except ValueError:  # pydantic's ValidationError: an invalid schedule never reaches the functions below
        assume(False)
        raise


EPOCH = st.one_of(
    st.floats(min_value=0, max_value=4e9),
    st.floats(min_value=-1e12, max_value=1e12),
    st.sampled_from([MAX_EPOCH, -MAX_EPOCH, MAX_EPOCH + 1, float("nan"), float("inf")]),
)


def schedule_error(exc: ValueError) -> None:
    assert one_line(exc).startswith(("expected", "time ", "cron ")), str(exc)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much], **SAME)
@given(schedules(), EPOCH)
def test_next_fire_is_later_or_none_or_one_value_error(schedule: ScheduleConfig, after: float) -> None:
    try:
        t = next_fire(schedule, after, job="fuzz")
    except ValueError as exc:
        schedule_error(exc)
        return
    assert t is None or (math.isfinite(t) and t > after)
    if t is not None:
        try:
            t2 = next_fire(schedule, t, job="fuzz")
        except ValueError as exc:  # t itself may be past the range a schedule can handle
            schedule_error(exc)
            return
        assert t2 is None or t2 > t


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much], **SAME)
@given(
    schedules(),
    EPOCH,
    st.floats(min_value=0, max_value=1e6),
    st.sampled_from(["skip", "run_once", "run_all"]),
    st.one_of(st.floats(min_value=0, max_value=1e6), st.sampled_from([-1.0, float("nan")])),
    st.integers(-1, 50),
)
def test_plan_misfires_keeps_its_promises(
    schedule: ScheduleConfig, last: float, down: float, policy: str, grace: float, limit: int
) -> None:
    now = last + down if math.isfinite(last) else last
    try:
        plan = plan_misfires(schedule, last, now, policy, grace, job="fuzz", limit=limit)  # type: ignore[arg-type]
    except ValueError as exc:
        schedule_error(exc)
        return
    assert all(last < t <= now for t in plan.run) and plan.run == sorted(set(plan.run))
    assert len(plan.run) <= {"skip": 0, "run_once": 1, "run_all": max(limit, 0)}[policy]
    assert all(t >= now - grace for t in plan.run)  # nothing older than the grace runs
    assert plan.skipped_count >= len(plan.skipped) and not set(plan.skipped) & set(plan.run)
    assert plan.next is None or plan.next > max(now, last)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much], **SAME)
@given(schedules(), st.floats(min_value=0, max_value=4e9), st.floats(min_value=0, max_value=1e6), st.integers(0, 30))
def test_fires_between_is_increasing_and_inside_the_window(
    schedule: ScheduleConfig, start: float, span: float, limit: int
) -> None:
    try:
        fires, _more = fires_between(schedule, start, start + span, job="fuzz", limit=limit)
    except ValueError as exc:
        schedule_error(exc)
        return
    assert len(fires) <= limit and fires == sorted(set(fires))
    assert all(start < t <= start + span for t in fires)


@FAST
@given(CRON_EXPR, ZONES)
def test_cron_expressions_in_a_crew_file_load_or_fail_with_the_key_path(expr: str, tz: str) -> None:
    text = (
        f'[[cron]]\nname = "j"\nschedule = {{ kind = "cron", expr = {json.dumps(expr)}, tz = "{tz}" }}\ntext = "hi"\n'
    )
    try:
        crew = parse_crew(text, source="c.toml")
    except ConfigError as exc:
        assert one_line(exc).startswith("c.toml: cron[0]")
        return
    t = next_fire(crew.cron[0].schedule, datetime(2026, 4, 2, tzinfo=UTC).timestamp(), job="j")
    assert t is None or t > 0
