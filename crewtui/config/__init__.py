"""The crew file: TOML (stdlib tomllib) loaded into pydantic models, with one-line errors naming file and key.

A crew file declares how to run agents (`[agents.NAME]`, an argv with `{task}`-style placeholders), the
rate-limit pools they share (`[pools.NAME]`), the scheduled jobs (`[[cron]]`) and crew-wide settings
(`[crew]`, `[backend]`). Everything a user can get wrong is checked when it is loaded, once, so the runtime
can trust what it gets: every error is one line, `<file>: <key.path>: <what was expected>, got <what>`.

This module reads and loads; the rest of the package holds the parts:
- models.py: the pydantic models of each table and the checks of their fields;
- templates.py: the `{name}` templates of cron jobs and agent argvs, and their rendering;
- explain.py: a pydantic ValidationError made into the one-line ConfigError;
- problems.py: how a check states a problem (the error it raises, how values and keys are shown).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from crewtui.config.explain import config_error, known_keys
from crewtui.config.models import (
    HIDDEN_KEYS,
    RAY_MISSING,
    AgentConfig,
    AgentResources,
    BackendConfig,
    CrewConfig,
    CrewSettings,
    CronConfig,
    ScheduleConfig,
    SpawnPayload,
)
from crewtui.config.notify import TRIGGERS, NotifyConfig, Trigger, WebhookConfig
from crewtui.config.pools import PROVIDER_UPSTREAMS, Backoff, BudgetConfig, PoolConfig, Rate
from crewtui.config.templates import (
    COMMAND_FIELDS,
    SAMPLE_VALUES,
    TEMPLATE_FIELDS,
    render_command,
    render_template,
    template_values,
)
from crewtui.config.workspace import WorkspaceConfig
from crewtui.errors import ConfigError

__all__ = [
    "COMMAND_FIELDS",
    "PROVIDER_UPSTREAMS",
    "RAY_MISSING",
    "SAMPLE_VALUES",
    "TEMPLATE_FIELDS",
    "TRIGGERS",
    "AgentConfig",
    "AgentResources",
    "BackendConfig",
    "Backoff",
    "BudgetConfig",
    "CrewConfig",
    "CrewSettings",
    "CronConfig",
    "NotifyConfig",
    "PoolConfig",
    "Rate",
    "ScheduleConfig",
    "SpawnPayload",
    "Trigger",
    "WebhookConfig",
    "WorkspaceConfig",
    "default_crew",
    "load_crew",
    "parse_crew",
    "render_command",
    "render_template",
    "template_values",
    "validate_cron_job",
]


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
    for hidden in HIDDEN_KEYS[CrewConfig]:
        if hidden in data:
            raise ConfigError(f"{where}: {hidden}: unknown key (known: {known_keys(())})")
    try:
        config = CrewConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(where, exc) from None
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
        raise config_error(where, exc) from None


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
