"""The crew file's templates: one-pass rendering of plain `{name}` fields, and the values they know.

Two template languages exist, both rendered by `render_template` (one pass, plain `{name}` fields only):
- spawn templates of a cron job (`label`, `task`, `domain`) know TEMPLATE_FIELDS: `{item}`, `{date}`
  (YYYY-MM-DD of the nominal fire time), `{time}` (HHMM) and `{run}` (the run's number within its job);
- agent argv elements know COMMAND_FIELDS: `{task}`, `{label}`, `{key}` (the session key), `{python}`
  (the interpreter running crewtui, `sys.executable`, so a crew works the same inside a venv) and `{port}` (a free
  TCP port of its own, for a dev server in its worktree; its agent's `env` values may use it too).

The models check their templates with `render_fields` against SAMPLE_VALUES / SAMPLE_COMMAND_VALUES when
a crew is loaded, so a template that would fail at run time fails at load time instead.
"""

from __future__ import annotations

import string
import sys
from datetime import datetime

from crewtui.errors import ConfigError

TEMPLATE_FIELDS = ("item", "date", "time", "run")
COMMAND_FIELDS = ("task", "label", "key", "python", "port")

# Values used to check templates when the crew is loaded; a real run substitutes its own.
SAMPLE_VALUES: dict[str, str] = {"item": "x", "date": "2026-04-02", "time": "0900", "run": "1"}
SAMPLE_COMMAND_VALUES: dict[str, str] = {
    "task": "sample task",
    "label": "sample-label",
    "key": "s-sample",
    "python": sys.executable or "python3",
    "port": "8000",
}


class TemplateError(ValueError):
    """A template problem, said without the place; callers add where it was found."""


def render_fields(template: str, values: dict[str, str]) -> str:
    """`render_template` without the place: raises TemplateError, for callers that say where themselves."""
    known = ", ".join("{" + name + "}" for name in values)
    out: list[str] = []
    try:
        pieces = list(string.Formatter().parse(template))
    except ValueError:
        raise TemplateError(
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
            raise TemplateError(f"expected only the fields {known}, got {shown} in {template!r}")
        out.append(values[field])
    return "".join(out)


def render_template(template: str, values: dict[str, str], where: str) -> str:
    """Substitute plain `{name}` fields from `values` in one pass (`{{`/`}}` are literal braces).

    Raises ConfigError naming `where` for an unknown field, a stray brace, or a field with an
    attribute, index, conversion or format spec. Substituted values are never re-read as templates.
    """
    try:
        return render_fields(template, values)
    except TemplateError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def render_command(command: list[str], values: dict[str, str], where: str = "command") -> list[str]:
    """Render each argv element on its own, so a task with spaces or quotes stays exactly one element.

    `values` normally holds COMMAND_FIELDS (task, label, key, python).
    """
    return [render_template(element, values, f"{where}[{i}]") for i, element in enumerate(command)]


def template_values(item: str, fire_time: datetime, run: int) -> dict[str, str]:
    """The values of TEMPLATE_FIELDS for one item of a cron run fired at `fire_time` (already in the job's zone)."""
    return {"item": item, "date": fire_time.strftime("%Y-%m-%d"), "time": fire_time.strftime("%H%M"), "run": str(run)}
