"""`[agents.NAME.workspace]`: each session of the agent works in its own git worktree of `repo`, and the runtime
alone merges what it did (crewtui/workspaces)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, field_validator

from crewtui.config.fields import Duration, _Strict
from crewtui.config.problems import describe, fail


def _optional_argv(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise fail(f"expected a list of strings (an argv, never a shell string), got {describe(value)}")
    return value


OptArgv = Annotated[list[str] | None, BeforeValidator(_optional_argv)]


class WorkspaceConfig(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    repo: str  # a git repository (relative to the crew file, ~ allowed)
    base: str | None = None  # the branch sessions start from (default: the one checked out in repo)
    into: str | None = None  # where finished work is merged (default: base)
    setup: OptArgv = None  # run in each new worktree before the agent starts
    # Files copied from the repo's checkout into each worktree (`copy` in the file; BaseModel has a copy()).
    copy_files: list[str] = Field(default_factory=list, alias="copy")
    merge: Literal["manual", "auto"] = "manual"  # auto: a done session's branch is queued at once
    check: OptArgv = None  # run on the merged tree; the target moves only if it passes
    history: Literal["merge", "linear"] = "merge"  # merge commits, or the branch's commits replayed on top
    allow_checked_out: bool = False  # may merge into a branch checked out in a clean checkout (fast-forwards it)
    cleanup_after: Duration = 600.0  # a merged session's worktree and branch are removed this long after the merge

    @field_validator("copy_files")
    @classmethod
    def _relative(cls, names: list[str]) -> list[str]:
        for name in names:
            p = PurePosixPath(name)
            if not name or p.is_absolute() or ".." in p.parts:
                raise fail(f"expected paths inside the repository (relative, no ..), got {describe(name)}")
        return names

    def repo_path(self, crew_file: Path | None) -> str:
        where = Path(self.repo).expanduser()
        if not where.is_absolute() and crew_file is not None:
            where = crew_file.parent / where
        return str(where)
