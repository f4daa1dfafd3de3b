"""The crew file: TOML (stdlib tomllib) loaded into pydantic models, with one-line errors naming file and key.

A crew file declares how to run agents (`[agents.NAME]`, an argv with `{task}`-style placeholders), the
rate-limit pools they share (`[pools.NAME]`), the scheduled jobs (`[[cron]]`) and crew-wide settings
(`[crew]`, `[backend]`). Everything a user can get wrong is checked here, once, so the runtime can trust
what it gets: every error is one line, `<file>: <key.path>: <what was expected>, got <what>`.

Two template languages exist, both rendered by `render_template` (one pass, plain `{name}` fields only):
- spawn templates of a cron job (`label`, `task`, `domain`) know TEMPLATE_FIELDS: `{item}`, `{date}`
  (YYYY-MM-DD of the nominal fire time), `{time}` (HHMM) and `{run}` (the run's number within its job);
- agent argv elements know COMMAND_FIELDS: `{task}`, `{label}`, `{key}` (the session key) and `{python}`
  (the interpreter running crewtui, `sys.executable`, so a crew works the same inside a venv).
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import math
import re
import string
import sys
import tomllib
import types
from datetime import date, datetime, time
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo

from croniter import croniter
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from crewtui.errors import BadInput, ConfigError
from crewtui.model import parse_duration, validate_label

TEMPLATE_FIELDS = ("item", "date", "time", "run")
COMMAND_FIELDS = ("task", "label", "key", "python")

# Values used to check templates when the crew is loaded; a real run substitutes its own.
SAMPLE_VALUES: dict[str, str] = {"item": "x", "date": "2026-04-02", "time": "0900", "run": "1"}
_SAMPLE_COMMAND_VALUES: dict[str, str] = {
    "task": "sample task",
    "label": "sample-label",
    "key": "s-sample",
    "python": sys.executable or "python3",
}

_LABEL_RULE = "1-128 characters of a-z 0-9 . _ -, starting with a letter or digit"
_ERR = "crew"  # the pydantic error type of every check written here


def _fail(msg: str, path: str = "") -> PydanticCustomError:
    """An error for pydantic to collect; `path` is relative to where the failing validator sits."""
    return PydanticCustomError(_ERR, "{msg}", {"msg": msg, "path": path})


def _describe(value: Any) -> str:
    """How a bad value is shown after `got`: in TOML's terms, short enough for one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table" if value else "an empty table"
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, list):
        text = "[" + ", ".join(_describe(v) for v in value[:6]) + (", ...]" if len(value) > 6 else "]")
    else:
        text = repr(value)
    text = text.replace("\n", "\\n")
    return text if len(text) <= 80 else text[:77] + "..."


# ------------------------------------------------------------------------------------------ field types


def _duration(value: Any) -> float:
    try:
        seconds = parse_duration(value)
    except (ValueError, OverflowError) as exc:
        raise _fail(str(exc) if isinstance(exc, ValueError) else f"expected a duration like '15m', got {_describe(value)}") from None
    # TOML has nan and inf, and 400 nines make an infinite float: a timer at nan or inf never fires (and nan
    # breaks the ordering of the timer heap), so neither is a duration.
    if not math.isfinite(seconds):
        raise _fail(f"expected a finite duration like '15m', got {_describe(value)}")
    return seconds


def _positive_duration(value: Any) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise _fail(f"expected a duration greater than zero like '15m', got {_describe(value)}")
    return seconds


def _optional(fn: Callable[[Any], float]) -> Callable[[Any], float | None]:
    def check(value: Any) -> float | None:
        return None if value is None else fn(value)

    return check


Duration = Annotated[float, BeforeValidator(_duration)]
PositiveDuration = Annotated[float, BeforeValidator(_positive_duration)]
OptDuration = Annotated[float | None, BeforeValidator(_optional(_duration))]
OptPositiveDuration = Annotated[float | None, BeforeValidator(_optional(_positive_duration))]


def _datetime(value: Any) -> Any:
    # pydantic would take a number as a Unix timestamp; in a crew file that is surely a mistake.
    if value is None or isinstance(value, (datetime, str)):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    raise _fail(f"expected a date-time like 2026-04-02T09:00:00, got {_describe(value)}")


OptDateTime = Annotated[datetime | None, BeforeValidator(_datetime)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------------------------- models


class CrewSettings(_Strict):
    """`[crew]`: crew-wide limits and housekeeping."""

    name: str = "crew"
    max_concurrent: int = Field(default=50, ge=1, strict=True)
    stale_after: PositiveDuration = 600.0
    registry: str | None = None  # the JSON file the runtime (as parent) merges children's results into
    max_spawn_depth: int = Field(default=2, ge=0, strict=True)
    max_children: int = Field(default=10, ge=1, strict=True)
    kill_grace: Duration = 5.0
    watchdog_after: OptPositiveDuration = None


def _argv(value: Any) -> Any:
    expected = "expected a list of strings (an argv, never a shell string)"
    if not isinstance(value, list):
        raise _fail(f"{expected}, got {_describe(value)}")
    if not value:
        raise _fail(f"{expected} with at least the program to run, got []")
    return value


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
               "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30, "t": 1 << 40, "tb": 1 << 40, "tib": 1 << 40}


def _bytes(value: Any) -> int | None:
    """A memory size: a whole number of bytes or a string like '2GB' / '512MiB' (powers of two)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
            if size > 0:
                return size
    raise _fail(f"expected a memory size like '2GB' or a number of bytes, got {_describe(value)}")


def _amount(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise _fail(f"expected a number of zero or more, got {_describe(value)}")
    return float(value)


Amount = Annotated[float, BeforeValidator(_amount)]


class AgentResources(_Strict):
    """`[agents.NAME.resources]`: what one session of this agent asks of a Ray node (Ray backend only)."""

    num_cpus: Amount | None = None
    num_gpus: Amount | None = None
    memory: Annotated[int | None, BeforeValidator(_bytes)] = None
    custom: dict[str, Amount] = Field(default_factory=dict)  # Ray custom resources, e.g. {"llm_slot" = 1}
    node_labels: dict[str, str] = Field(default_factory=dict)  # passed to Ray as the actor's label_selector

    def ray_options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        if self.num_cpus is not None:
            opts["num_cpus"] = self.num_cpus
        if self.num_gpus is not None:
            opts["num_gpus"] = self.num_gpus
        if self.memory is not None:
            opts["memory"] = self.memory
        if self.custom:
            opts["resources"] = dict(self.custom)
        if self.node_labels:
            opts["label_selector"] = dict(self.node_labels)
        return opts


class AgentConfig(_Strict):
    """`[agents.NAME]`: how to run a task; argv elements may use COMMAND_FIELDS."""

    command: Annotated[list[str], BeforeValidator(_argv)]
    pool: str | None = None
    resources: AgentResources | None = None
    env: dict[str, str] = Field(default_factory=dict)
    watchdog_after: OptPositiveDuration = None
    max_attempts: int = Field(default=1, ge=1, strict=True)
    description: str = ""

    @field_validator("command")
    @classmethod
    def _command_fields(cls, command: list[str]) -> list[str]:
        for i, element in enumerate(command):
            try:
                _render(element, _SAMPLE_COMMAND_VALUES)
            except _TemplateError as exc:
                raise _fail(str(exc), f"[{i}]") from None
        if not command[0].strip():
            raise _fail(f"expected the program to run as the first element, got {_describe(command[0])}", "[0]")
        return command


class Backoff(_Strict):
    """Exponential backoff with full jitter between rate-limited retries."""

    base: Duration = 2.0
    max: Duration = 300.0

    @model_validator(mode="after")
    def _ordered(self) -> Backoff:
        if self.max < self.base:
            raise _fail(f"expected a duration of at least base ({self.base:g}s), got {self.max:g}s", "max")
        return self


_RATE_UNITS = {
    "s": 1.0, "sec": 1.0, "second": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0,
    "h": 3600.0, "hour": 3600.0,
    "d": 86400.0, "day": 86400.0,
}  # fmt: skip


class Rate(BaseModel):
    """A token-bucket start rate: `count` starts per `per` seconds ("30/min", "5/s", "10/15m")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(ge=1, strict=True)
    per: float = Field(gt=0)

    @property
    def per_second(self) -> float:
        return self.count / self.per

    def __str__(self) -> str:
        return f"{self.count}/{self.per:g}s"


def _rate(value: Any) -> Any:
    if value is None or isinstance(value, (dict, Rate)):
        return value
    expected = "expected a rate like '30/min', '5/s', '100/h' or '10/15m'"
    if not isinstance(value, str) or value.count("/") != 1:
        raise _fail(f"{expected}, got {_describe(value)}")
    count_text, per_text = (part.strip().lower() for part in value.split("/"))
    if not count_text.isdigit() or int(count_text) < 1:
        raise _fail(f"{expected} (a whole number of at least 1 before the '/'), got {_describe(value)}")
    per = _RATE_UNITS.get(per_text.removesuffix("s") if len(per_text) > 3 else per_text)
    if per is None:
        try:
            per = parse_duration(per_text)
        except ValueError:
            raise _fail(f"{expected}, got {_describe(value)}") from None
    if per <= 0:
        raise _fail(f"{expected} (a period greater than zero), got {_describe(value)}")
    return {"count": int(count_text), "per": per}


class PoolConfig(_Strict):
    """`[pools.NAME]`: a concurrency cap and start rate shared by every session that names the pool."""

    max_concurrent: int | None = Field(default=None, ge=1, strict=True)
    rate: Annotated[Rate | None, BeforeValidator(_rate)] = None
    retry_on_exit: list[Annotated[int, Field(ge=0, le=255, strict=True)]] = Field(default_factory=lambda: [75])
    retry_on_stderr: str | None = None
    backoff: Backoff = Field(default_factory=Backoff)

    @field_validator("retry_on_stderr")
    @classmethod
    def _regex(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise _fail(f"expected a regular expression (Python re), got {_describe(pattern)} ({exc})") from None
        return pattern


_CRON_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week", "second", "year")


def _cron_problem(expr: str) -> str | None:
    """Why croniter refuses `expr`, naming the field at fault when one can be singled out; None if valid."""
    fields = expr.split()
    if len(fields) not in (5, 6, 7):
        return f"{len(fields)} fields; a cron expression has 5 (minute hour day-of-month month day-of-week)"
    try:
        croniter(expr)
        return None
    except Exception as exc:  # croniter raises several unrelated classes for bad input
        whole = str(exc) or type(exc).__name__
    # croniter names the expression, not the field: try each field alone among wildcards to find it.
    for i, field in enumerate(fields):
        probe = ["*"] * len(fields)
        probe[i] = field
        try:
            croniter(" ".join(probe))
        except Exception:
            return f"the {_CRON_FIELD_NAMES[i]} field {field!r} is not valid"
    return whole


class ScheduleConfig(_Strict):
    """When a cron job fires: once (`at`), on an interval (`every`), or on a cron expression (`expr`)."""

    kind: Literal["at", "every", "cron"]
    at: OptDateTime = None
    every: OptPositiveDuration = None
    anchor: OptDateTime = None  # `every` counts from here (default: when the job was added)
    expr: str | None = None
    tz: str = "UTC"
    stagger: OptDuration = None  # spread fires by up to this much, so many jobs do not start in one tick

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        try:
            ZoneInfo(tz)
        except Exception:  # unknown names, path-like names and empty strings fail in different ways
            raise _fail(f"expected an IANA time zone like 'UTC' or 'Europe/Berlin', got {_describe(tz)}") from None
        return tz

    @model_validator(mode="after")
    def _shape(self) -> ScheduleConfig:
        needs = {"at": "at", "every": "every", "cron": "expr"}[self.kind]
        examples = {"at": "at = 2026-04-02T09:00:00", "every": "every = '15m'", "cron": "expr = '0 9 * * *'"}
        if getattr(self, needs) is None:
            raise _fail(f"expected {examples[self.kind]} for kind '{self.kind}', got nothing", needs)
        # A key of another kind is ignored by the scheduler, so it is almost surely a mistake.
        owners = {"at": "at", "every": "every", "anchor": "every", "expr": "cron"}
        for key, owner in owners.items():
            value = getattr(self, key)
            if value is not None and owner != self.kind:
                raise _fail(
                    f"expected no '{key}' for kind '{self.kind}' (only kind '{owner}' uses it), "
                    f"got {_describe(value)}",
                    key,
                )
        if self.expr is not None:
            problem = _cron_problem(self.expr)
            if problem:
                raise _fail(
                    f"expected a cron expression like '0 9 * * *' (minute hour day-of-month month day-of-week), "
                    f"got {_describe(self.expr)} ({problem})",
                    "expr",
                )
        # Naive date-times mean wall time in the schedule's zone, as a user reading the file would.
        zone = self.zone
        if self.at is not None and self.at.tzinfo is None:
            self.at = self.at.replace(tzinfo=zone)
        if self.anchor is not None and self.anchor.tzinfo is None:
            self.anchor = self.anchor.replace(tzinfo=zone)
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


class SpawnPayload(_Strict):
    """What a cron run spawns: one session of `agent` per item, labels and tasks rendered from templates."""

    agent: str
    label: str
    task: str = ""
    domain: str | None = None
    items: list[str] = Field(default_factory=lambda: [""], min_length=1)

    @model_validator(mode="after")
    def _templates(self) -> SpawnPayload:
        seen: set[str] = set()
        for i, item in enumerate(self.items):
            if item in seen:
                raise _fail(f"expected each item once, got {_describe(item)} twice", f"items[{i}]")
            seen.add(item)
        labels: dict[str, str] = {}
        for item in self.items:
            values = {**SAMPLE_VALUES, "item": item}
            for key in ("task", "domain"):
                template = getattr(self, key)
                if template is not None:
                    rendered = _render_checked(template, values, key)
                    if key == "domain" and not rendered.strip():
                        raise _fail(f"expected a template that renders to a non-empty domain, got {template!r}", key)
            label = _render_checked(self.label, values, "label")
            try:
                validate_label(label)
            except BadInput:
                raise _fail(
                    f"expected a template that renders to a valid label ({_LABEL_RULE}), "
                    f"got {self.label!r} (renders to {label!r} for item {item!r})",
                    "label",
                ) from None
            if label in labels:
                raise _fail(
                    f"expected a template that gives each item its own label (use {{item}}), got {self.label!r} "
                    f"(items {labels[label]!r} and {item!r} both render to {label!r})",
                    "label",
                )
            labels[label] = item
        return self


def _render_checked(template: str, values: dict[str, str], key: str) -> str:
    try:
        return _render(template, values)
    except _TemplateError as exc:
        raise _fail(str(exc), key) from None


class CronConfig(_Strict):
    """`[[cron]]`: a named schedule and its payload (spawn sessions, run an action, or emit a system text)."""

    name: str
    schedule: ScheduleConfig
    misfire: Literal["skip", "run_once", "run_all"] = "run_once"
    misfire_grace: Duration = 3600.0
    overlap: Literal["allow", "forbid", "replace"] = "forbid"
    watchdog_after: OptPositiveDuration = None
    max_attempts: int = Field(default=1, ge=1, strict=True)
    # A run is closed (its completion rate counted) at the latest this long after it fired.
    deadline: OptPositiveDuration = None
    # Also fire once each time a runtime starts (the demo crew uses it so a newcomer sees a crew at once).
    fire_at_start: bool = False
    spawn: SpawnPayload | None = None
    action: Literal["sweep"] | None = None
    text: str | None = None

    @field_validator("name")
    @classmethod
    def _label_like(cls, name: str) -> str:
        try:
            validate_label(name)
        except BadInput:
            raise _fail(f"expected a name of {_LABEL_RULE}, got {_describe(name)}") from None
        return name

    @model_validator(mode="after")
    def _one_payload(self) -> CronConfig:
        given = [key for key in ("spawn", "action", "text") if getattr(self, key) is not None]
        if len(given) != 1:
            got = " and ".join(given) if given else "none"
            raise _fail(f"expected exactly one payload key of spawn, action or text, got {got}")
        return self


RAY_MISSING = "the Ray backend needs Ray, which is not installed here: pip install 'crewtui[ray]'"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class BackendConfig(_Strict):
    """`[backend]`: where sessions run: local processes, or a Ray cluster at `address`."""

    kind: Literal["local", "ray"] = "local"
    # "auto" (the cluster `ray start` left on this machine, or RAY_ADDRESS), "HOST:PORT" (the head's GCS)
    # or "ray://HOST:PORT" (Ray Client).
    address: str = "auto"
    namespace: str = "crewtui"
    start_timeout: PositiveDuration = 60.0  # how long a session may wait for a node with its resources

    @field_validator("kind")
    @classmethod
    def _ray_installed(cls, value: str) -> str:
        if value == "ray" and not _importable("ray"):
            raise _fail(RAY_MISSING)
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if value == "auto" or re.fullmatch(r"(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}", value):
            return value
        raise _fail(f"expected \"auto\", \"HOST:PORT\" or \"ray://HOST:PORT\", got {_describe(value)}")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", value):
            return value
        raise _fail(f"expected 1-64 characters of A-Z a-z 0-9 . _ -, got {_describe(value)}")


class CrewConfig(_Strict):
    """A whole crew file. `source` is not read from TOML: the loader sets it to the file's absolute path."""

    crew: CrewSettings = Field(default_factory=CrewSettings)
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    pools: dict[str, PoolConfig] = Field(default_factory=dict)
    cron: list[CronConfig] = Field(default_factory=list)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    source: Path | None = None

    @model_validator(mode="after")
    def _references(self) -> CrewConfig:
        for name, agent in self.agents.items():
            if agent.pool is not None and agent.pool not in self.pools:
                raise _fail(
                    f"unknown pool {agent.pool!r}; known: {_known(self.pools, '[pools.NAME]')}",
                    f"agents.{_key(name)}.pool",
                )
        names: dict[str, int] = {}
        for i, job in enumerate(self.cron):
            if job.name in names:
                raise _fail(
                    f"expected a name not used by another job, got {job.name!r} (also cron[{names[job.name]}])",
                    f"cron[{i}].name",
                )
            names[job.name] = i
            if job.spawn is not None and job.spawn.agent not in self.agents:
                raise _fail(
                    f"unknown agent {job.spawn.agent!r}; known: {_known(self.agents, '[agents.NAME]')}",
                    f"cron[{i}].spawn.agent",
                )
        return self

    def registry_path(self, data_dir: Path) -> Path | None:
        """The registry file: a relative path is inside the data dir (the runtime owns it); None if unset.

        Not relative to the crew file: a crew file may live in a read-only place (the packaged demo crew).
        """
        if self.crew.registry is None:
            return None
        path = Path(self.crew.registry).expanduser()
        return path if path.is_absolute() else (data_dir / path).absolute()


def _known(names: dict[str, Any], how: str) -> str:
    return ", ".join(sorted(names)) if names else f"none (define one with {how})"


# ------------------------------------------------------------------------------------------- templates


class _TemplateError(ValueError):
    """A template problem, said without the place; callers add where it was found."""


def _render(template: str, values: dict[str, str]) -> str:
    known = ", ".join("{" + name + "}" for name in values)
    out: list[str] = []
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError:
        raise _TemplateError(
            f"expected a template with balanced braces (write {{{{ or }}}} for a literal brace), got {template!r}"
        ) from None
    for literal, field, spec, conversion in pieces:
        out.append(literal)
        if field is None:
            continue
        # Attributes, indexes, conversions and specs would let a template reach beyond plain strings.
        if field not in values or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            shown = repr(shown)[1:-1]  # a field name may hold a newline; the error stays one line
            raise _TemplateError(f"expected only the fields {known}, got {shown} in {template!r}")
        out.append(values[field])
    return "".join(out)


def render_template(template: str, values: dict[str, str], where: str) -> str:
    """Substitute plain `{name}` fields from `values` in one pass (`{{`/`}}` are literal braces).

    Raises ConfigError naming `where` for an unknown field, a stray brace, or a field with an
    attribute, index, conversion or format spec. Substituted values are never re-read as templates.
    """
    try:
        return _render(template, values)
    except _TemplateError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def render_command(command: list[str], values: dict[str, str], where: str = "command") -> list[str]:
    """Render each argv element on its own, so a task with spaces or quotes stays exactly one element.

    `values` normally holds COMMAND_FIELDS (task, label, key, python).
    """
    return [render_template(element, values, f"{where}[{i}]") for i, element in enumerate(command)]


def template_values(item: str, fire_time: datetime, run: int) -> dict[str, str]:
    """The values of TEMPLATE_FIELDS for one item of a cron run fired at `fire_time` (already in the job's zone)."""
    return {"item": item, "date": fire_time.strftime("%Y-%m-%d"), "time": fire_time.strftime("%H%M"), "run": str(run)}


# --------------------------------------------------------------------------------------------- loading


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(part: str) -> str:
    return part if _BARE_KEY.fullmatch(part) else json.dumps(part)


def _dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    """("cron", 0, "schedule", "expr") -> "cron[0].schedule.expr"."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + _key(str(part))
    return out


def _join(base: str, rel: str) -> str:
    if not rel:
        return base
    if not base or rel.startswith("["):
        return base + rel
    return f"{base}.{rel}"


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            tp = models[0] if models else args[0]
        else:
            return tp


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that validates the value at `loc` in a CrewConfig, to list its known keys."""
    tp: Any = CrewConfig
    for part in loc:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if not isinstance(part, str) or part not in tp.model_fields:
                return None
            tp = tp.model_fields[part].annotation
        elif origin is dict:
            tp = get_args(tp)[1]
        elif origin is list:
            tp = get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


# Keys a crew file may not set, though the model has them.
_HIDDEN_KEYS: dict[type[BaseModel], set[str]] = {CrewConfig: {"source"}}

_EXPECTED = {
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "list_type": "expected an array",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "datetime_type": "expected a date-time like 2026-04-02T09:00:00",
    "datetime_parsing": "expected a date-time like 2026-04-02T09:00:00",
    "datetime_from_date_parsing": "expected a date-time like 2026-04-02T09:00:00",
}


def _known_keys(loc: tuple[Any, ...]) -> str:
    model = _model_at(loc)
    if model is None:
        return ""
    hidden = _HIDDEN_KEYS.get(model, set())
    return ", ".join(name for name in model.model_fields if name not in hidden)


def _explain(err: Any) -> tuple[str, str]:
    """One pydantic error as (dotted key path, what was expected and what was got)."""
    loc = tuple(err.get("loc", ()))
    path = _dotted(loc)
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == _ERR:
        return _join(path, ctx.get("path", "")), ctx.get("msg", err.get("msg", ""))
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        msg = f"unknown key (known: {known})" if known else "unknown key"
        close = difflib.get_close_matches(str(loc[-1]), known.split(", "), n=1) if known else []
        return path, msg + (f"; did you mean {close[0]!r}?" if close else "")
    if kind == "missing":
        return path, "required key is missing"
    if kind == "literal_error":
        return path, f"expected {ctx.get('expected', 'one of the allowed values')}, got {_describe(value)}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()), "?")
        return path, f"expected a number {op} {bound}, got {_describe(value)}"
    if kind == "too_short":
        return path, f"expected at least {ctx.get('min_length', 1)} element(s), got {_describe(value)}"
    if kind == "list_type" and loc == ("cron",):
        return path, f"expected an array of tables (write [[cron]], not [cron]), got {_describe(value)}"
    if kind in _EXPECTED:
        return path, f"{_EXPECTED[kind]}, got {_describe(value)}"
    # An error type not foreseen above: pydantic's own sentence, still on one line.
    msg = str(err.get("msg", kind)).replace("\n", " ")
    return path, f"{msg[:1].lower()}{msg[1:]}, got {_describe(value)}"


def _config_error(where: str, exc: ValidationError) -> ConfigError:
    errors = exc.errors(include_url=False)
    path, msg = _explain(errors[0])
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return ConfigError(f"{where}: {path}: {msg}{more}" if path else f"{where}: {msg}{more}")


_TOML_POS = re.compile(r"^(?P<msg>.*?) \((?:at line (?P<line>\d+), column (?P<col>\d+)|at end of document)\)$")


def _parse(text: str, where: str, source: Path | None) -> CrewConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_POS.match(str(exc))
        if m is None:
            raise ConfigError(f"{where}: not valid TOML ({exc})") from None
        pos = f"line {m['line']}, column {m['col']}" if m["line"] else "end of file"
        raise ConfigError(f"{where}: {pos}: not valid TOML ({m['msg']})") from None
    for hidden in _HIDDEN_KEYS[CrewConfig]:
        if hidden in data:
            raise ConfigError(f"{where}: {hidden}: unknown key (known: {_known_keys(())})")
    try:
        config = CrewConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(where, exc) from None
    config.source = source
    return config


def validate_cron_job(crew: CrewConfig, data: dict[str, Any], where: str = "cron add") -> CronConfig:
    """Check one job (as given to `crewtui ctl cron add`) against the crew's agents.

    Only the new job is validated (in a crew made of the real agents and pools), so adding the 1,000th job
    costs what adding the first did; its name's uniqueness is the scheduler's to check.
    """
    whole = {
        "agents": {k: v.model_dump() for k, v in crew.agents.items()},
        "pools": {k: v.model_dump() for k, v in crew.pools.items()},
        "cron": [data],
    }
    try:
        return CrewConfig.model_validate(whole).cron[0]
    except ValidationError as exc:
        raise _config_error(where, exc) from None


def parse_crew(text: str, source: str = "<crew>") -> CrewConfig:
    """Validate a crew file's text; `source` only names it in errors (the result's `source` stays None)."""
    return _parse(text, source, None)


def load_crew(path: str | Path) -> CrewConfig:
    """Read and validate a crew file; every problem is a one-line ConfigError naming the file and key."""
    where = str(path)
    p = Path(path).expanduser()
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: expected a crew file, got a directory") from None
    except PermissionError:
        raise ConfigError(f"{where}: cannot read the file (permission denied)") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read the file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: expected UTF-8 text, got an invalid byte at offset {exc.start}") from None
    return _parse(text, where, p.absolute())


def default_crew() -> CrewConfig:
    """A crew with no agents: only raw argv spawns, default limits, no cron jobs."""
    return CrewConfig()
