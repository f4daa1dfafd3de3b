"""The crew file's shape: a pydantic model per table, with the checks and parsers of their fields.

Durations, rates, byte sizes, cron expressions, time zones, labels and templates are all checked here,
once, so the runtime can trust what it gets. A check states its problem with `fail` (problems.py); the
key path and the one-line message are explain.py's work.
"""

from __future__ import annotations

import importlib.util
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, BeforeValidator, Field, field_validator, model_validator

from crewtui.adapters import get_preset
from crewtui.adapters.base import AgentOptions, Permissions
from crewtui.config.fields import (
    Duration,
    OptDateTime,
    OptDuration,
    OptPositiveDuration,
    PositiveDuration,
    _Strict,
)
from crewtui.config.notify import NotifyConfig
from crewtui.config.pools import PoolConfig
from crewtui.config.pricing import PriceConfig
from crewtui.config.problems import describe, fail, toml_key
from crewtui.config.templates import SAMPLE_COMMAND_VALUES, SAMPLE_VALUES, TemplateError, render_fields
from crewtui.config.workspace import WorkspaceConfig
from crewtui.errors import BadInput
from crewtui.model import MAX_ATTEMPTS, MIN_EVERY, validate_label

_LABEL_RULE = "1-128 characters of a-z 0-9 . _ -, starting with a letter or digit"


# ------------------------------------------------------------------------------------------ field types


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


def _optional_argv(value: Any) -> Any:
    return None if value is None else _argv(value)


def _argv(value: Any) -> Any:
    expected = "expected a list of strings (an argv, never a shell string)"
    if not isinstance(value, list):
        raise fail(f"{expected}, got {describe(value)}")
    if not value:
        raise fail(f"{expected} with at least the program to run, got []")
    return value


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
    "tib": 1 << 40,
}


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
    raise fail(f"expected a memory size like '2GB' or a number of bytes, got {describe(value)}")


def _amount(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise fail(f"expected a number of zero or more, got {describe(value)}")
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
    """`[agents.NAME]`: how to run a task; argv elements may use COMMAND_FIELDS.

    Either a `command` (any program: the task goes where `{task}` is), or a `preset` (an agent CLI crewtui
    speaks to: crewtui/adapters), whose `command` is only the program (default: the preset's usual name) and
    `args` extra arguments passed through."""

    command: Annotated[list[str] | None, BeforeValidator(_optional_argv)] = None
    preset: str | None = None
    args: list[str] = Field(default_factory=list)
    permissions: Permissions | None = None  # ask (a person decides) | allow | deny; preset agents only
    price: PriceConfig | None = None
    model: str | None = None
    pool: str | None = None
    resources: AgentResources | None = None
    env: dict[str, str] = Field(default_factory=dict)
    watchdog_after: OptPositiveDuration = None
    max_attempts: int = Field(default=1, ge=1, le=MAX_ATTEMPTS, strict=True)
    description: str = ""
    cwd: str | None = None  # where its sessions run (relative to the crew file); default: the runtime's directory
    workspace: WorkspaceConfig | None = None  # each session in its own git worktree (crewtui/workspaces)
    tty: bool = Field(default=False, strict=True)  # runs on a terminal people can attach to (drivers/terminal.py)

    @model_validator(mode="after")
    def _preset(self) -> AgentConfig:
        if self.preset is None:
            for key in ("args", "permissions", "model"):
                if getattr(self, key):
                    raise fail(f"{key} applies only to an agent with a preset (or put it in command)", key)
        elif self.tty:
            raise fail(
                "a preset's CLI speaks JSON on pipes; for its interactive terminal use a command "
                '(command = ["claude"], tty = true)',
                "tty",
            )
        if self.preset is None:
            if self.command is None:
                raise fail("required key is missing", "command")  # as for any required key; a preset is the other way
            return self
        try:
            get_preset(self.preset).check(self.options())
        except BadInput as exc:
            key = next((k for k in ("permissions", "command") if k in str(exc)), "preset")
            raise fail(str(exc), key) from None
        return self

    def options(self) -> AgentOptions:
        """What a preset needs to know of this agent."""
        return AgentOptions(
            command=tuple(self.command or ()),
            args=tuple(self.args),
            permissions=self.permissions or (get_preset(self.preset).default_permissions if self.preset else "ask"),
            price=self.price.price() if self.price else None,
            model=self.model,
        )

    @field_validator("command")
    @classmethod
    def _command_fields(cls, command: list[str] | None) -> list[str] | None:
        if command is None:
            return None
        for i, element in enumerate(command):
            try:
                render_fields(element, SAMPLE_COMMAND_VALUES)
            except TemplateError as exc:
                raise fail(str(exc), f"[{i}]") from None
        if not command[0].strip():
            raise fail(f"expected the program to run as the first element, got {describe(command[0])}", "[0]")
        return command


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
            raise fail(f"expected an IANA time zone like 'UTC' or 'Europe/Berlin', got {describe(tz)}") from None
        return tz

    @model_validator(mode="after")
    def _shape(self) -> ScheduleConfig:
        needs = {"at": "at", "every": "every", "cron": "expr"}[self.kind]
        examples = {"at": "at = 2026-04-02T09:00:00", "every": "every = '15m'", "cron": "expr = '0 9 * * *'"}
        if getattr(self, needs) is None:
            raise fail(f"expected {examples[self.kind]} for kind '{self.kind}', got nothing", needs)
        # A key of another kind is ignored by the scheduler, so it is almost surely a mistake.
        owners = {"at": "at", "every": "every", "anchor": "every", "expr": "cron"}
        for key, owner in owners.items():
            value = getattr(self, key)
            if value is not None and owner != self.kind:
                raise fail(
                    f"expected no '{key}' for kind '{self.kind}' (only kind '{owner}' uses it), got {describe(value)}",
                    key,
                )
        if self.every is not None and self.every < MIN_EVERY:
            raise fail(f"expected an interval of at least {MIN_EVERY:g}s, got {describe(self.every)} seconds", "every")
        if self.expr is not None:
            problem = _cron_problem(self.expr)
            if problem:
                raise fail(
                    f"expected a cron expression like '0 9 * * *' (minute hour day-of-month month day-of-week), "
                    f"got {describe(self.expr)} ({problem})",
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

    def never_fires(self) -> bool:
        """A valid cron expression naming no date that exists (`0 0 30 2 *`: the 30th of February)."""
        if self.kind != "cron" or self.expr is None:
            return False
        try:
            croniter(self.expr, datetime.now(self.zone)).get_next(datetime)
        except CroniterBadDateError:
            return True
        return False


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
                raise fail(f"expected each item once, got {describe(item)} twice", f"items[{i}]")
            seen.add(item)
        labels: dict[str, str] = {}
        for item in self.items:
            values = {**SAMPLE_VALUES, "item": item}
            for key in ("task", "domain"):
                template = getattr(self, key)
                if template is not None:
                    rendered = _render_checked(template, values, key)
                    if key == "domain" and not rendered.strip():
                        raise fail(f"expected a template that renders to a non-empty domain, got {template!r}", key)
            label = _render_checked(self.label, values, "label")
            try:
                validate_label(label)
            except BadInput:
                raise fail(
                    f"expected a template that renders to a valid label ({_LABEL_RULE}), "
                    f"got {self.label!r} (renders to {label!r} for item {item!r})",
                    "label",
                ) from None
            if label in labels:
                raise fail(
                    f"expected a template that gives each item its own label (use {{item}}), got {self.label!r} "
                    f"(items {labels[label]!r} and {item!r} both render to {label!r})",
                    "label",
                )
            labels[label] = item
        return self


def _render_checked(template: str, values: dict[str, str], key: str) -> str:
    try:
        return render_fields(template, values)
    except TemplateError as exc:
        raise fail(str(exc), key) from None


class CronConfig(_Strict):
    """`[[cron]]`: a named schedule and its payload (spawn sessions, run an action, or emit a system text)."""

    name: str
    schedule: ScheduleConfig
    misfire: Literal["skip", "run_once", "run_all"] = "run_once"
    misfire_grace: Duration = 3600.0
    overlap: Literal["allow", "forbid", "replace"] = "forbid"
    watchdog_after: OptPositiveDuration = None
    max_attempts: int = Field(default=1, ge=1, le=MAX_ATTEMPTS, strict=True)
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
            raise fail(f"expected a name of {_LABEL_RULE}, got {describe(name)}") from None
        return name

    @model_validator(mode="after")
    def _one_payload(self) -> CronConfig:
        given = [key for key in ("spawn", "action", "text") if getattr(self, key) is not None]
        if len(given) != 1:
            got = " and ".join(given) if given else "none"
            raise fail(f"expected exactly one payload key of spawn, action or text, got {got}")
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
    # "host": one crewtui host actor per node runs that node's sessions through the shim (light, the default);
    # "actor": each session attempt is its own Ray actor (a Python worker each: isolation, at ~90 MB a session).
    mode: Literal["host", "actor"] = "host"

    @field_validator("kind")
    @classmethod
    def _ray_installed(cls, value: str) -> str:
        if value == "ray" and not _importable("ray"):
            raise fail(RAY_MISSING)
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if value == "auto" or re.fullmatch(r"(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}", value):
            return value
        raise fail(f'expected "auto", "HOST:PORT" or "ray://HOST:PORT", got {describe(value)}')

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", value):
            return value
        raise fail(f"expected 1-64 characters of A-Z a-z 0-9 . _ -, got {describe(value)}")


class CrewConfig(_Strict):
    """A whole crew file. `source` is not read from TOML: the loader sets it to the file's absolute path."""

    crew: CrewSettings = Field(default_factory=CrewSettings)
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    pools: dict[str, PoolConfig] = Field(default_factory=dict)
    cron: list[CronConfig] = Field(default_factory=list)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    source: Path | None = None

    @model_validator(mode="after")
    def _references(self) -> CrewConfig:
        for name, agent in self.agents.items():
            if agent.pool is not None and agent.pool not in self.pools:
                raise fail(
                    f"unknown pool {agent.pool!r}; known: {_known(self.pools, '[pools.NAME]')}",
                    f"agents.{toml_key(name)}.pool",
                )
        for name, pool in self.pools.items():
            unpriced = [a for a, agent in self.agents.items() if agent.pool == name and agent.price is None]
            if pool.budget_usd is not None and pool.price is None and unpriced:
                raise fail(
                    f"a budget in dollars needs a price: set price on the pool (agent {unpriced[0]!r} has none)",
                    f"pools.{toml_key(name)}.budget_usd",
                )
        names: dict[str, int] = {}
        for i, job in enumerate(self.cron):
            if job.name in names:
                raise fail(
                    f"expected a name not used by another job, got {job.name!r} (also cron[{names[job.name]}])",
                    f"cron[{i}].name",
                )
            names[job.name] = i
            if job.spawn is not None and job.spawn.agent not in self.agents:
                raise fail(
                    f"unknown agent {job.spawn.agent!r}; known: {_known(self.agents, '[agents.NAME]')}",
                    f"cron[{i}].spawn.agent",
                )
        return self

    def warnings(self) -> list[str]:
        """What is valid but almost surely not meant (said at load, not refused)."""
        return [
            f"cron[{i}] ({job.name}): `{job.schedule.expr}` never fires (no such date); the job will never run"
            for i, job in enumerate(self.cron)
            if job.schedule.never_fires()
        ]

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


# Keys a crew file may not set, though the model has them: the loader fills them in.
HIDDEN_KEYS: dict[type[BaseModel], set[str]] = {CrewConfig: {"source"}}
