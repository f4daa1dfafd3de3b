"""OpenClaw's scheduled jobs as a crew file: the converter behind `crewtui import openclaw`.

OpenClaw keeps cron jobs ("automations") in two shapes this reads, told apart by their keys:
- the older store file `~/.openclaw/cron/jobs.json`: `{"version": 1, "jobs": [CronJob, ...]}`;
- the output of `openclaw automations list --all --json` (`openclaw cron list` is the same command): the
  Gateway's `cron.list` page, `{"jobs": [CronJob + "status"], "total", "offset", "limit", "hasMore", ...}`.
A CronJob is `{id, agentId?, name, description?, enabled, deleteAfterRun?, schedule, sessionTarget, wakeMode,
payload, delivery?, failureAlert?, state, ...}` (OpenClaw's src/cron/types.ts and the gateway protocol's
CronJobSchema). `convert_openclaw` is pure: parsed JSON in, crew TOML text and what it could not carry over
out. What it cannot express is said twice: in the returned list (the CLI prints it) and as a comment beside
the job in the file.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from crewtui.config.models import ScheduleConfig
from crewtui.config.tomltext import comment, duration_ms, escape_template, toml_array, toml_inline, toml_key, toml_str
from crewtui.errors import BadInput

Shape = Literal["jobs.json", "automations list"]

EXPECTED = (
    'expected OpenClaw cron jobs: a jobs.json store ({"version": 1, "jobs": [...]}) or the output of '
    '`openclaw automations list --all --json` ({"jobs": [...], ...})'
)

DEFAULT_AGENT = "openclaw"
PRESET = "openclaw"
LABEL_SUFFIX = "-{date}-{run}"  # every run's labels are unique: the job, the day, the run's number
_NAME_MAX = 100  # a label is at most 128 characters; leave room for the date and run suffix
# `openclaw agent exec` ends the turn itself at --timeout; the watchdog is the backstop for a hung process.
WATCHDOG_MARGIN_S = 30
# croner (OpenClaw's cron parser) knows these nicknames; crewtui wants the five fields.
_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True)
class Unmapped:
    """Something of one OpenClaw job the crew file does not carry: the whole job, or one of its settings."""

    job: str  # the job's OpenClaw name
    reason: str
    whole_job: bool = False  # True: the job is not in the crew file at all

    def line(self) -> str:
        return f"skipped: {self.job}: {self.reason}"


@dataclass(frozen=True)
class Conversion:
    """A crew file made from OpenClaw jobs, and what it leaves out."""

    toml: str
    unmapped: list[Unmapped]
    shape: Shape
    imported: int  # jobs written into the crew file (disabled ones included, commented out)
    disabled: int  # of those, written commented out because OpenClaw had them disabled
    skipped: int  # jobs not in the crew file

    def summary(self) -> str:
        def jobs(n: int) -> str:
            return f"{n} job{'' if n == 1 else 's'}"

        disabled = f" ({self.disabled} disabled: commented out)" if self.disabled else ""
        return f"{jobs(self.imported)} imported{disabled}, {self.skipped} skipped"


# ------------------------------------------------------------------------------------------ reading input


def read_export(path: str | Path) -> Any:
    """Read and parse an OpenClaw export file; every problem is one BadInput line naming the file."""
    where = str(path)
    p = Path(path).expanduser()
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{where}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{where}: expected a JSON file, got a directory") from None
    except PermissionError:
        raise BadInput(f"{where}: cannot read the file (permission denied)") from None
    except OSError as exc:
        raise BadInput(f"{where}: cannot read the file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{where}: expected UTF-8 text, got an invalid byte at offset {exc.start}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise BadInput(f"{where}: not valid JSON (nested too deeply)") from None


def detect(data: Any) -> tuple[Shape, list[Any]]:
    """Which of OpenClaw's shapes `data` is, and its jobs; BadInput (one line) if it is neither."""
    if not isinstance(data, dict):
        raise BadInput(f"{EXPECTED}, got {_kind(data)}")
    jobs = data.get("jobs")
    if not isinstance(jobs, list):
        got = "no 'jobs' key" if "jobs" not in data else f"'jobs' as {_kind(jobs)}"
        raise BadInput(f"{EXPECTED}, got an object with {got}")
    if "version" in data:
        if data["version"] != 1 or isinstance(data["version"], bool):
            raise BadInput(f"expected a jobs.json store of version 1, got version {data['version']!r}")
        return "jobs.json", jobs
    return "automations list", jobs


# ------------------------------------------------------------------------------------------- conversion


@dataclass
class _Agent:
    name: str
    comments: list[str]
    preset: str | None = None
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    description: str = ""
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class _Job:
    """One job as the crew file will hold it (before it is written)."""

    name: str
    comments: list[str]
    schedule: dict[str, Any]
    enabled: bool
    watchdog_after: str | None = None
    agent: str | None = None
    task: str = ""
    text: str | None = None  # a system text payload instead of a spawn


class _Skip(Exception):
    """This job cannot be carried over; the message says why."""


class _Converter:
    def __init__(self) -> None:
        self.agents: dict[str, _Agent] = {}
        self.preset_agents: dict[tuple[str | None, tuple[str, ...]], str] = {}
        self.cron_names: set[str] = set()
        self.unmapped: list[Unmapped] = []

    # ---------------------------------------------------------------------------------------------- names

    def _unique(self, base: str, taken: set[str] | dict[str, Any]) -> str:
        name, n = base, 2
        while name in taken:
            name = f"{base[: _NAME_MAX - 1 - len(str(n))]}-{n}"
            n += 1
        return name

    def preset_agent(self, agent_id: str | None, args: list[str], overrides: list[str]) -> str:
        key = (agent_id, tuple(args))
        if key in self.preset_agents:
            return self.preset_agents[key]
        base = (slug(agent_id) if agent_id else "") or DEFAULT_AGENT
        if overrides:
            base = f"{base}-{'-'.join(slug(o) for o in overrides if slug(o))}"[:_NAME_MAX].rstrip("-._")
        name = self._unique(base, self.agents)
        who = f"OpenClaw agent {agent_id!r}" if agent_id else "OpenClaw's default agent"
        comments = [f"{who}: each task runs as one `openclaw agent exec TASK --json` turn (preset {PRESET!r})."]
        if agent_id:
            comments.append("`openclaw agent exec` has no --agent: the turn uses exec's defaults, not this agent's own")
            comments.append('settings (give it that agent\'s workspace with args = ["--cwd", DIR], or --config FILE).')
        description = who + (f" ({', '.join(overrides)})" if overrides else "")
        self.agents[name] = _Agent(name, comments, preset=PRESET, command=["openclaw"], args=args,
                                   description=description)  # fmt: skip
        self.preset_agents[key] = name
        return name

    # ----------------------------------------------------------------------------------------------- jobs

    def job(self, index: int, raw: Any) -> _Job | None:
        where = f"jobs[{index}]"
        if not isinstance(raw, dict):
            raise BadInput(f"{where}: expected a job object, got {_kind(raw)}")
        name = _req_str(raw, "name", where)
        where = f"{where} ({name!r})"
        job_id = _req_str(raw, "id", where)
        enabled = raw.get("enabled")
        if not isinstance(enabled, bool):
            raise BadInput(f"{where}: expected 'enabled' as true or false, got {_shown(raw, 'enabled')}")
        schedule = _req_obj(raw, "schedule", where)
        payload = _req_obj(raw, "payload", where)
        schedule_kind = _req_str(schedule, "kind", f"{where}: schedule")
        payload_kind = _req_str(payload, "kind", f"{where}: payload")
        notes: list[str] = []  # not carried over: in the file as comments and in the returned list
        remarks: list[str] = []  # carried over with a caveat: in the file only

        def note(reason: str, listed: bool = True) -> None:
            (notes if listed else remarks).append(reason)

        try:
            sched = self.schedule(schedule, schedule_kind, where, note)
            cron_name = self._unique(slug(name) or f"job-{slug(job_id) or index}", self.cron_names)
            job = _Job(name=cron_name, comments=[], schedule=sched, enabled=enabled)
            self.payload(job, payload, payload_kind, raw, where, note)
        except _Skip as skip:
            self.unmapped.append(Unmapped(name, str(skip), whole_job=True))
            return None
        self.cron_names.add(job.name)
        self.settings(raw, schedule_kind, note)

        header = f"OpenClaw job {name!r} (id {job_id})"
        job.comments.append(header)
        if isinstance(raw.get("description"), str) and raw["description"].strip():
            job.comments.append(raw["description"])
        if not enabled:
            job.comments.append("disabled in OpenClaw: uncomment the job below to run it")
            self.unmapped.append(Unmapped(name, "disabled in OpenClaw: written commented out"))
        job.comments.extend(f"note: {remark}" for remark in remarks)
        for reason in notes:
            job.comments.append(f"not carried over: {reason}")
            self.unmapped.append(Unmapped(name, reason))
        return job

    def schedule(self, s: dict[str, Any], kind: str, where: str, note: Any) -> dict[str, Any]:
        where = f"{where}: schedule"
        out: dict[str, Any]
        if kind == "at":
            out = {"kind": "at", "at": _at(s, where)}
        elif kind == "every":
            every_ms = _req_int(s, "everyMs", where)
            if every_ms <= 0:
                raise BadInput(f"{where}: expected 'everyMs' greater than zero, got {every_ms}")
            out = {"kind": "every", "every": duration_ms(every_ms)}
            if s.get("anchorMs") is not None:
                out["anchor"] = _from_ms(_req_int(s, "anchorMs", where), f"{where}: anchorMs")
        elif kind == "cron":
            expr = _req_str(s, "expr", where).strip()
            expr = _NICKNAMES.get(expr.lower(), expr)
            fields = expr.split()
            if len(fields) == 6:
                # croner's sixth field is the seconds, written first; croniter wants them last.
                expr = " ".join([*fields[1:], fields[0]])
            out = {"kind": "cron", "expr": expr}
            tz = s.get("tz")
            if tz is not None and not isinstance(tz, str):
                raise BadInput(f"{where}: expected 'tz' as a string, got {_shown(s, 'tz')}")
            if tz:
                out["tz"] = tz
            else:
                out["tz"] = "UTC"
                note("schedule without tz: OpenClaw uses the Gateway host's time zone; written as UTC, set tz")
            if s.get("staggerMs") is not None:
                stagger = _req_int(s, "staggerMs", where)
                if stagger > 0:
                    out["stagger"] = duration_ms(stagger)
        elif kind in ("on-exit", "stream"):
            raise _Skip(f"schedule kind {kind!r} fires on a watched command, not on time; crewtui cannot express it")
        else:
            raise _Skip(f"unknown schedule kind {kind!r} (expected at, every or cron)")
        try:
            ScheduleConfig.model_validate(out)
        except ValidationError as exc:
            problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise _Skip(f"schedule {_describe_schedule(s)}: {problem}") from None
        return out

    def payload(self, job: _Job, p: dict[str, Any], kind: str, raw: dict[str, Any], job_where: str, note: Any) -> None:
        where = f"{job_where}: payload"
        if kind == "agentTurn":
            message = _req_str(p, "message", where)
            args: list[str] = []
            overrides: list[str] = []
            model = _opt_str(p, "model", where)
            if model:
                args += ["--model", model]
                overrides.append(model.rsplit("/", 1)[-1])
                if "/" not in model:
                    note(f"payload.model {model!r}: `openclaw agent exec --model` wants provider/model", listed=False)
            fallbacks = p.get("fallbacks")
            if fallbacks:
                if not isinstance(fallbacks, list) or not all(isinstance(f, str) for f in fallbacks):
                    raise BadInput(f"{where}: expected 'fallbacks' as a list of strings, got {_shown(p, 'fallbacks')}")
                if model:
                    for fallback in fallbacks:
                        args += ["--fallback", fallback]
                else:
                    note("payload.fallbacks: `openclaw agent exec --fallback` needs a model; dropped")
            thinking = _opt_str(p, "thinking", where)
            if thinking:
                args += ["--thinking", thinking]
                overrides.append(f"thinking-{thinking}")
            timeout = _opt_seconds(p, "timeoutSeconds", where)
            if timeout:
                args += ["--timeout", str(math.ceil(timeout))]
                overrides.append(f"timeout-{math.ceil(timeout)}s")
                job.watchdog_after = duration_ms(math.ceil((timeout + WATCHDOG_MARGIN_S) * 1000))
            agent_id = _opt_str(raw, "agentId", job_where)
            job.agent = self.preset_agent(agent_id or None, args, overrides)
            job.task = message
            target = raw.get("sessionTarget")
            if isinstance(target, str) and target != "isolated":
                note(
                    f"sessionTarget {target!r}: each run is a fresh isolated `openclaw agent exec` turn; "
                    "that session's context is not used"
                )
            for key, why in (
                ("toolsAllow", "crewtui cannot restrict OpenClaw's tools per job"),
                ("lightContext", "`openclaw agent exec` has no lightweight-context switch"),
                ("allowUnsafeExternalContent", "`openclaw agent exec` has no such switch"),
            ):
                if p.get(key) and not (key == "toolsAllow" and p.get("toolsAllowIsDefault")):
                    note(f"payload.{key} {_short(p[key])}: {why}")
            legacy = [k for k in ("deliver", "channel", "to", "bestEffortDeliver") if p.get(k)]
            if legacy:
                shown = ", ".join(f"{k}={_short(p[k])}" for k in legacy)
                note(f"payload {shown}: crewtui has no delivery channels (the result stays in the session)")
        elif kind == "systemEvent":
            job.text = _req_str(p, "text", where)
            note(
                "payload systemEvent: written as a crewtui system text (shown on the timeline); "
                "no OpenClaw session receives it",
                listed=False,
            )
        elif kind == "command":
            argv = p.get("argv")
            if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
                raise BadInput(f"{where}: expected 'argv' as a non-empty list of strings, got {_shown(p, 'argv')}")
            env = p.get("env") or {}
            if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
                raise BadInput(f"{where}: expected 'env' as an object of strings, got {_shown(p, 'env')}")
            name = self._unique(f"{job.name}-command"[:_NAME_MAX], self.agents)
            self.agents[name] = _Agent(
                name,
                [f"OpenClaw command job {raw.get('name')!r}: its argv, run as a plain process (no model)."],
                command=[escape_template(a) for a in argv],
                description=f"command of OpenClaw job {raw.get('name')}",
                cwd=_opt_str(p, "cwd", where),
                env={str(k): v for k, v in env.items()},
            )
            job.agent = name
            timeout = _opt_seconds(p, "timeoutSeconds", where)
            if timeout:
                job.watchdog_after = duration_ms(math.ceil(timeout * 1000))
            for key, why in (
                ("input", "crewtui does not write a fixed stdin to a session"),
                ("noOutputTimeoutSeconds", "crewtui's stale_after is crew-wide ([crew] stale_after)"),
                ("outputMaxBytes", "crewtui keeps a session's whole output"),
            ):
                if p.get(key) is not None:
                    note(f"payload.{key} {_short(p[key])}: {why}")
        elif kind == "script":
            raise _Skip("payload kind 'script' runs an OpenClaw code-mode script with the agent's tools")
        elif kind == "heartbeat":
            raise _Skip("payload kind 'heartbeat' is OpenClaw's own system-owned heartbeat monitor")
        else:
            raise _Skip(f"unknown payload kind {kind!r} (expected agentTurn, systemEvent or command)")

    def settings(self, raw: dict[str, Any], schedule_kind: str, note: Any) -> None:
        """Job settings beside schedule and payload that crewtui has no place for."""
        delivery = raw.get("delivery")
        if isinstance(delivery, dict) and delivery.get("mode") not in (None, "none"):
            dest = " ".join(f"{k}={_short(delivery[k])}" for k in ("channel", "to") if delivery.get(k))
            note(
                f"delivery {delivery.get('mode')}{' ' + dest if dest else ''}: crewtui has no delivery channels "
                "(the result stays in the session)"
            )
        if raw.get("failureAlert"):
            note("failureAlert: crewtui sends no alerts to chat channels or webhooks")
        if raw.get("wakeMode") == "next-heartbeat" and raw.get("sessionTarget") != "isolated":
            note("wakeMode 'next-heartbeat': crewtui has no heartbeat; the job fires at its scheduled time")
        if raw.get("deleteAfterRun") and schedule_kind != "at":
            note("deleteAfterRun: crewtui keeps its jobs after they run")
        if isinstance(raw.get("pacing"), dict):
            note("pacing: crewtui keeps the fixed schedule (no agent-proposed next check)")
        if isinstance(raw.get("trigger"), dict):
            note("trigger (condition script): crewtui fires on every due time, ungated")


def convert_openclaw(data: Any, source: str = "") -> Conversion:
    """Turn parsed OpenClaw JSON (either shape, detected) into crew file text and what it leaves out.

    Raises BadInput (one line) when `data` is not one of the shapes or a job lacks a field the shape requires.
    Deterministic: the same input gives the same text.
    """
    shape, raw_jobs = detect(data)
    conv = _Converter()
    jobs: list[_Job] = []
    for i, raw in enumerate(raw_jobs):
        job = conv.job(i, raw)
        if job is not None:
            jobs.append(job)
    skipped = sum(1 for u in conv.unmapped if u.whole_job)
    disabled = sum(1 for j in jobs if not j.enabled)
    text = _render(jobs, conv.agents, shape, source, len(raw_jobs))
    return Conversion(text, conv.unmapped, shape, len(jobs), disabled, skipped)


# ---------------------------------------------------------------------------------------------- writing


def _render(jobs: list[_Job], agents: dict[str, _Agent], shape: Shape, source: str, total: int) -> str:
    origin = f"from {source} " if source else ""
    out: list[str] = [
        comment(
            f"Imported by `crewtui import openclaw` {origin}(OpenClaw {shape}: {total} job{'' if total == 1 else 's'})."
        ),
        "# Each agent turn runs `openclaw agent exec TASK --json` (the openclaw preset); OpenClaw's delivery,",
        "# heartbeat and session settings have no place here and are listed as 'not carried over'.",
        "",
        "[crew]",
        f"name = {toml_str('openclaw')}",
    ]
    for agent in agents.values():
        out.append("")
        out.append(f"[agents.{toml_key(agent.name)}]")
        out.extend(comment(c) for c in agent.comments)
        if agent.preset:
            out.append(f"preset = {toml_str(agent.preset)}")
        out.append(f"command = {toml_array(agent.command)}")
        if agent.args:
            out.append(f"args = {toml_array(agent.args)}")
        if agent.description:
            out.append(f"description = {toml_str(agent.description)}")
        if agent.cwd:
            out.append(f"cwd = {toml_str(agent.cwd)}")
        if agent.env:
            out.append(f"env = {toml_inline(dict(agent.env))}")
    for job in jobs:
        out.append("")
        out.extend(comment(c) for c in job.comments)
        block = _job_lines(job)
        out.extend(block if job.enabled else [f"# {line}" if line else "#" for line in block])
    return "\n".join(out) + "\n"


def _job_lines(job: _Job) -> list[str]:
    lines = [
        "[[cron]]",
        f"name = {toml_str(job.name)}",
        f"schedule = {toml_inline(job.schedule)}",
        # OpenClaw runs a missed job once after downtime and never runs a job beside itself: the same here.
        f"misfire = {toml_str('run_once')}",
        f"overlap = {toml_str('forbid')}",
    ]
    if job.watchdog_after:
        lines.append(f"watchdog_after = {toml_str(job.watchdog_after)}")
    if job.text is not None:
        lines.append(f"text = {toml_str(job.text)}")
        return lines
    assert job.agent is not None
    lines += [
        "",
        "[cron.spawn]",
        f"agent = {toml_str(job.agent)}",
        f"label = {toml_str(job.name[:_NAME_MAX] + LABEL_SUFFIX)}",
    ]
    if job.task:
        lines.append(f"task = {toml_str(escape_template(job.task))}")
    return lines


# ------------------------------------------------------------------------------------------------ values


def slug(text: str) -> str:
    """`text` made a crewtui label (a-z 0-9 . _ -, starting with a letter or digit), or "" if nothing is left."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    dashed = re.sub(r"[^a-z0-9._-]+", "-", folded)
    dashed = re.sub(r"-{2,}", "-", dashed)
    return re.sub(r"^[^a-z0-9]+", "", dashed)[:_NAME_MAX].rstrip("-._")


def _at(s: dict[str, Any], where: str) -> datetime:
    if "at" not in s and "atMs" in s:  # the store's older one-shot shape: milliseconds since the epoch
        return _from_ms(_req_int(s, "atMs", where), f"{where}: atMs")
    at = _req_str(s, "at", where)
    try:
        when = datetime.fromisoformat(at.strip())
    except ValueError:
        raise _Skip(f"schedule at {at!r}: not an ISO 8601 time") from None
    # OpenClaw reads a time without an offset as UTC; say so in the file rather than leave it to a default.
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _from_ms(ms: int, where: str) -> datetime:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise BadInput(f"{where}: expected milliseconds since 1970, got {ms}") from None


def _describe_schedule(s: dict[str, Any]) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in s.items())


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)  # fmt: skip


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown(obj: dict[str, Any], key: str) -> str:
    return "nothing" if key not in obj else f"{_kind(obj[key])} {_short(obj[key])}"


def _req_str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise BadInput(f"{where}: expected {key!r} as a string, got {_shown(obj, key)}")
    return value


def _opt_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise BadInput(f"{where}: expected {key!r} as a string, got {_shown(obj, key)}")
    return value


def _req_int(obj: dict[str, Any], key: str, where: str) -> int:
    value = obj.get(key)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadInput(f"{where}: expected {key!r} as a whole number, got {_shown(obj, key)}")
    return value


def _opt_seconds(obj: dict[str, Any], key: str, where: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise BadInput(f"{where}: expected {key!r} as a number of seconds, got {_shown(obj, key)}")
    return float(value) or None


def _req_obj(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise BadInput(f"{where}: expected {key!r} as an object, got {_shown(obj, key)}")
    return value
