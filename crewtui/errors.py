"""The errors a user can cause. Each carries one clear line; the CLI prints it and exits 2, the UI shows it.

`kind` is a stable machine name so the control socket can send an error and the client raise the same class.
"""

from __future__ import annotations


class CrewError(Exception):
    """Base of every error meant for a user: its message is one line, no traceback is shown."""

    kind = "error"
    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadInput(CrewError):
    """A request that cannot be done as asked (invalid label, unknown agent, text too long...)."""

    kind = "bad_input"


class NotFound(CrewError):
    """An unknown session key or label, cron job, pool..."""

    kind = "not_found"


class Conflict(CrewError):
    """A request that clashes with the current state (duplicate live label, held domain, ended session)."""

    kind = "conflict"


class ConfigError(CrewError):
    """A crew file that is not valid; the message names the file, the key path and what was expected."""

    kind = "config"


class StoreError(CrewError):
    """The store file is not usable (not a crewtui database, newer schema, not writable)."""

    kind = "store"


class RuntimeUnavailable(CrewError):
    """No runtime listens on the data dir, or another one already owns it."""

    kind = "unavailable"


ERROR_KINDS: dict[str, type[CrewError]] = {
    cls.kind: cls for cls in (CrewError, BadInput, NotFound, Conflict, ConfigError, StoreError, RuntimeUnavailable)
}


def error_from_wire(kind: str, message: str) -> CrewError:
    return ERROR_KINDS.get(kind, CrewError)(message)


def first_line(exc: BaseException) -> str:
    """An exception in one short line (its message's first line, else its type's name)."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
