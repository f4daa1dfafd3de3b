"""The runtime's side of workspaces: a session of an agent with a `workspace` (or spawned with `--repo`) runs in
its own git worktree, what it changed is committed and counted when it ends, and one writer per repository
merges the queued branches, one at a time (crewtui/workspaces).

- Spawn: the repository and the base are checked (one line when either is wrong), the branch is `crew/<label>`
  and the session claims the domain `repo:<path>#<branch>`.
- Launch: the worktree is made (or found again: a retry, a restart) in `DATA_DIR/worktrees/<key>`, the crew's
  files copied in, its `setup` argv run there (a failure fails the session with its output); the agent runs there
  with `CREWTUI_WORKTREE`.
- End: uncommitted changes are committed on the branch, naming the session; `changes` counts files, insertions
  and deletions against the commit it started from; with `merge = "auto"` a done session's branch is queued.
- Merge queue: per repository, in the order branches were queued; a merge waiting on the user's checkout is
  tried again every MERGE_RETRY_S; a restart puts back in line what was queued or merging (a merge a kill -9
  interrupted never moved the target). Every step is a `workspace` event on the timeline.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from pathlib import Path
from typing import Literal

from crewtui.clock import ClockLike
from crewtui.config import CrewConfig, WorkspaceConfig
from crewtui.errors import BadInput, Conflict
from crewtui.events import SystemEvent, WorkspaceChanged
from crewtui.locations import DataDir
from crewtui.model import Session, SpawnRequest, SweepItem, short_duration, validate_label
from crewtui.runtime.bus import EventBus
from crewtui.runtime.sessions import SessionTable
from crewtui.workspaces import commands, merging, worktrees
from crewtui.workspaces.git import git

log = logging.getLogger("crewtui.workspaces")

MERGE_RETRY_S = 10.0  # a merge that waits (the target checked out by the user) is tried again this often
SETUP_TIMEOUT = 1800.0
DEFAULT_CLEANUP_S = 600.0  # a `--repo` spawn (no agent workspace): its merged worktree goes after ten minutes
SETUP_TAIL = 1500


def _workspace(crew: CrewConfig, s: Session) -> WorkspaceConfig | None:
    agent = crew.agents.get(s.agent) if s.agent else None
    return agent.workspace if agent is not None else None


def _copied(crew: CrewConfig, s: Session) -> list[str]:
    """The files its crew copies into each worktree: never part of the runtime's commit, nor work lost."""
    config = _workspace(crew, s)
    return list(config.copy_files) if config is not None else []


def _setup_marker(worktree: Path) -> Path:
    """Says the setup ran (a retry does not run it again); in the worktree's own git dir, out of the tree, where
    git would see it as a new file."""
    git_dir = Path((worktree / ".git").read_text().split(":", 1)[1].strip())
    return git_dir / "crewtui-setup-done"


class Workspaces:
    def __init__(
        self, table: SessionTable, bus: EventBus, crew: CrewConfig, clock: ClockLike, data_dir: DataDir
    ) -> None:
        self.table = table
        self.bus = bus
        self.crew = crew
        self.clock = clock
        self.data_dir = data_dir
        self._queues: dict[str, asyncio.Task[None]] = {}  # repo -> its merge worker
        self._wake: dict[str, asyncio.Event] = {}
        self._running = False
        self._cleanups: set[asyncio.Task[None]] = set()
        self._discarding: set[str] = set()  # keys whose worktree and branch are being removed
        self._setups: dict[str, int] = {}  # key -> the process group of its setup, while it runs
        self._setups_stopped: set[str] = set()
        self._checks: dict[str, int] = {}  # key -> the process group of its merge's check, while it runs

    # ------------------------------------------------------------------------------------ spawn

    async def resolve(self, req: SpawnRequest) -> SpawnRequest:
        """A spawn with a workspace: its repository and base checked, its domain claimed; else as it was."""
        agent = self.crew.agents.get(req.agent) if req.agent else None
        config = agent.workspace if agent is not None else None
        if config is None and req.repo is None:
            if req.best_of is not None:
                raise BadInput("best of N needs a workspace: --repo PATH, or an agent with a workspace")
            return req
        repo_text = req.repo or (config.repo_path(self.crew.source) if config else None)
        assert repo_text is not None
        root = await asyncio.to_thread(worktrees.repo_root, Path(repo_text).expanduser())
        base = req.base or (config.base if config else None)
        if base is None:
            base = await asyncio.to_thread(worktrees.current_branch, root)
        await asyncio.to_thread(worktrees.base_commit, root, base)
        if config is not None and config.into and await asyncio.to_thread(worktrees.no_branch, root, config.into):
            raise BadInput(f"no branch {config.into!r} in {root} to merge into (the workspace's into)")
        if await asyncio.to_thread(self._dirty_base, root, base):
            self.bus.publish(
                SystemEvent(
                    level="warning",
                    text=f"{req.label}: {root} has uncommitted changes on {base}; its worktree starts from {base}'s "
                    "last commit, without them",
                )
            )
        branch = worktrees.branch_for(req.label)
        # A label held by a live session is said as such (before its branch, which that session holds, is).
        validate_label(req.label)
        self.table.labels.check(req.label, self.table.describe)
        await asyncio.to_thread(worktrees.check_new_branch, root, branch)
        domain = req.domain or f"repo:{root}#{branch}"
        return req.model_copy(update={"repo": str(root), "base": base, "domain": domain})

    @staticmethod
    def _dirty_base(root: Path, base: str) -> bool:
        """Whether the user's checkout has `base` checked out with uncommitted changes (not in a new worktree)."""
        p = git(root, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        return p.stdout.strip() == base and bool(worktrees.dirty_files(root))

    def take(self, s: Session, req: SpawnRequest) -> None:
        """A new session of a workspace spawn: where its worktree and branch will be."""
        if req.repo is None:
            return
        s.repo = req.repo
        s.base = req.base
        s.branch = worktrees.branch_for(s.label)
        s.worktree = str(self.data_dir.worktree(s.key))
        s.merge = "none"
        s.best_of = req.best_of

    # ------------------------------------------------------------------------------------ launch

    async def prepare(self, s: Session) -> None:
        """Make the worktree (or find it again) and run the setup: before the agent starts there."""
        if s.repo is None or s.branch is None or s.worktree is None:
            return
        config = _workspace(self.crew, s)
        copy = list(config.copy_files) if config else []
        repo, path = Path(s.repo), Path(s.worktree)
        start = await asyncio.to_thread(worktrees.create, repo, s.base or "HEAD", s.branch, path, copy)
        if s.base_commit is None:
            s.base_commit = start
            self.table.store.put_session(s)
        if config is not None and config.setup and not _setup_marker(path).exists():
            await asyncio.to_thread(self._setup, s.key, config.setup, path)

    def _setup(self, key: str, argv: list[str], where: Path) -> None:
        try:
            ran = commands.run(
                argv, where, SETUP_TIMEOUT, SETUP_TAIL, started=functools.partial(self._track, self._setups, key)
            )
        except OSError as exc:  # FileNotFoundError: no such program; PermissionError: not executable
            raise BadInput(f"workspace setup: {argv[0]} {commands.why(exc)}") from None
        if ran.code is None:
            raise BadInput(f"workspace setup {argv[0]}: over {SETUP_TIMEOUT:g}s (killed): {ran.tail}".rstrip(": "))
        if key in self._setups_stopped:
            self._setups_stopped.discard(key)
            raise BadInput(f"workspace setup {argv[0]} stopped: the session was killed, or the runtime stopped")
        if ran.code != 0:
            raise BadInput(f"workspace setup {' '.join(argv)} exited {ran.code}: {ran.tail}")
        _setup_marker(where).touch()

    @staticmethod
    def _track(running: dict[str, int], key: str, pid: int | None) -> None:
        """Where a session's setup, or its merge's check, runs: its process group (None: it is over)."""
        if pid is None:
            running.pop(key, None)
        else:
            running[key] = pid

    def stop_setup(self, key: str) -> None:
        """A session killed while its setup runs (a hung `npm ci`): the setup's process group is killed, so the
        kill (and a runtime stop) does not wait for it; the session fails saying so."""
        pid = self._setups.get(key)
        if pid is not None:
            self._setups_stopped.add(key)
            commands.kill_group(pid)

    # ------------------------------------------------------------------------------------ end

    async def ended(self, s: Session, done: bool) -> None:
        """Commit what it left, count what it changed; a done session of an auto-merge agent is queued."""
        if s.repo is None or s.branch is None or s.worktree is None or s.base_commit is None:
            return
        path = Path(s.worktree)
        if not path.exists():
            s.merge_note = f"its worktree {path} is gone (removed by hand?): nothing to commit"
            self._event(s, "missing", note=s.merge_note)
            return
        try:
            message = f"crewtui: work of session {s.label} ({s.key}, attempt {s.attempt})"
            await asyncio.to_thread(worktrees.commit_all, path, message, s.branch, _copied(self.crew, s))
            c = await asyncio.to_thread(worktrees.changes, Path(s.repo), s.base_commit, s.branch)
        except BadInput as exc:
            s.merge_note = str(exc)
            self._event(s, "missing", note=str(exc))
            return
        s.changes = c.as_dict()
        if self._sibling_merged(s):  # another try of its task was merged while it ran: its work is not wanted
            await self.discard(s, ended=True)
            return
        config = _workspace(self.crew, s)
        if done and config is not None and config.merge == "auto" and c.commits:
            self.queue(s)

    # ------------------------------------------------------------------------------------ verbs

    async def diff(self, s: Session, stat: bool) -> str:
        if s.repo is None or s.branch is None or s.base_commit is None:
            raise BadInput(f"{s.label} has no workspace (spawn it with --repo or an agent with a workspace)")
        return await asyncio.to_thread(worktrees.diff, Path(s.repo), s.base_commit, s.branch, stat)

    def request_merge(self, s: Session) -> Session:
        """Queue an ended session's branch (brought back into memory if it had left: the queue reads it there)."""
        if s.repo is None or s.branch is None:
            raise BadInput(f"{s.label} has no workspace to merge")
        if s.state.live:
            raise Conflict(f"{s.label} is still {s.state.value}: merge it when it has ended")
        if s.merge in ("queued", "merging", "merged", "discarded"):
            raise Conflict(f"{s.label}: its branch is already {s.merge}")
        if s.key in self._discarding:
            raise Conflict(f"{s.label}: its branch is being discarded")
        if s.key not in self.table.sessions:
            self.table.bring_back([s])
        s = self.table.sessions[s.key]
        self.queue(s)
        return s

    async def discard(self, s: Session, ended: bool = False) -> Session:
        if s.repo is None or s.branch is None or s.worktree is None:
            raise BadInput(f"{s.label} has no workspace to discard")
        if s.state.live and not ended:
            raise Conflict(f"{s.label} is still {s.state.value}: kill it first")
        if s.merge in ("merging", "merged", "discarded"):
            raise Conflict(f"{s.label}: its branch is {s.merge}; nothing to discard")
        if s.key in self._discarding:
            raise Conflict(f"{s.label}: its branch is being discarded")
        # While its worktree and branch go (a big worktree takes a while), it is neither merged nor taken from the
        # queue (`_next`), and a second discard is refused: else a merge could land work then said discarded.
        self._discarding.add(s.key)
        try:
            await asyncio.to_thread(worktrees.remove, Path(s.repo), Path(s.worktree), s.branch)
        finally:
            self._discarding.discard(s.key)
            if s.merge == "queued":  # back in line (a removal that failed; else it is discarded at once below)
                self._kick(s.repo)
        self._set(s, "discarded", note=None)
        self._event(s, "discarded")
        return s

    # ------------------------------------------------------------------------------------ the queue

    def start(self) -> None:
        """Put back in line what a previous runtime had queued or was merging; clean up what was merged."""
        self._running = True
        waiting = [s for s in self.table.sessions.values() if s.merge in ("queued", "merging")]
        for s in sorted(waiting, key=lambda s: s.merge_queued_at or 0.0):
            if s.merge == "merging":
                self._set(s, "queued", note="put back in line after a restart")
            self._kick(s.repo or "")
        for s in self.table.sessions.values():
            if s.merge == "merged" and s.worktree is not None and Path(s.worktree).exists():
                self._cleanup_later(s)

    async def stop(self) -> None:
        self._running = False
        for key in list(self._setups):
            self.stop_setup(key)
        # A check still running (a hung test suite) is killed, not waited for: its merge never moved the target,
        # and it stays `merging`, put back in line by the next runtime.
        for pid in list(self._checks.values()):
            commands.kill_group(pid)
        tasks = [*self._queues.values(), *self._cleanups]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def queue(self, s: Session) -> None:
        s.merge_queued_at = self.clock.now()
        self._set(s, "queued", note=None)
        self._event(s, "queued")
        self._kick(s.repo or "")

    def _kick(self, repo: str) -> None:
        if not self._running or not repo:
            return
        self._wake.setdefault(repo, asyncio.Event()).set()
        task = self._queues.get(repo)
        if task is None or task.done():
            self._queues[repo] = asyncio.create_task(self._worker(repo), name=f"merge-queue-{Path(repo).name}")

    def _next(self, repo: str) -> Session | None:
        line = [
            s
            for s in self.table.sessions.values()
            if s.repo == repo and s.merge == "queued" and s.key not in self._discarding
        ]
        return min(line, key=lambda s: s.merge_queued_at or 0.0) if line else None

    async def _worker(self, repo: str) -> None:
        wake = self._wake.setdefault(repo, asyncio.Event())
        while self._running:
            wake.clear()
            s = self._next(repo)
            if s is None:
                return
            waited = await self._merge(s)
            if waited:
                try:
                    await asyncio.wait_for(wake.wait(), MERGE_RETRY_S)
                except TimeoutError:
                    pass

    async def _merge(self, s: Session) -> bool:
        """Merge one session's branch; True when it has to wait (it stays first in line)."""
        config = _workspace(self.crew, s)
        assert s.repo is not None and s.branch is not None and s.base_commit is not None
        into = self._into(s)
        self._set(s, "merging", note=None)
        self._event(s, "merging")
        message = f"crewtui: merge {s.branch} (session {s.label}, {s.key})"
        try:
            result = await asyncio.to_thread(
                self._merge_locked,
                Path(s.repo),
                self._merge_worktree(s.repo),
                into,
                s.branch,
                s.base_commit,
                message,
                config.history if config else "merge",
                list(config.check) if config and config.check else None,
                config.allow_checked_out if config else False,
                functools.partial(self._track, self._checks, s.key),
            )
        except BadInput as exc:  # git failed outside the merge itself (a full disk, the branch gone): not merged
            self._set(s, "failed", note=str(exc))
            self._event(s, "failed", note=str(exc))
            return False
        if result.outcome == "waiting":
            self._set(s, "queued", note=result.note)
            self._event(s, "waiting", note=result.note)
            return True
        note = result.note or None
        if result.outcome == "conflict":
            note = f"conflict in {', '.join(result.files) or '?'}: {result.note}"
        self._set(s, result.outcome, note=note)
        self._event(s, result.outcome, files=result.files, note=result.note, commit=result.commit)
        if result.outcome == "merged":
            self._cleanup_later(s)
            await self._discard_siblings(s)
        return False

    def _siblings(self, s: Session) -> list[Session]:
        if s.best_of is None:
            return []
        return [
            o for o in self.table.sessions.values() if o.best_of == s.best_of and o.repo == s.repo and o.key != s.key
        ]

    def _sibling_merged(self, s: Session) -> bool:
        return any(o.merge == "merged" for o in self._siblings(s))

    async def _discard_siblings(self, s: Session) -> None:
        """Best of N: the one merged, the other tries are discarded (those still running, when they end)."""
        for o in self._siblings(s):
            if not o.state.live and o.merge not in ("merged", "discarded", "merging"):
                try:
                    await self.discard(o)
                except (BadInput, Conflict) as exc:
                    log.warning("could not discard %s: %s", o.label, exc)

    def _cleanup_later(self, s: Session) -> None:
        """A merged session's worktree and branch go after the crew's grace (its work is in the target now)."""
        config = _workspace(self.crew, s)
        grace = config.cleanup_after if config is not None else DEFAULT_CLEANUP_S
        due = (s.updated_at or self.clock.now()) + grace

        async def later() -> None:
            await self.clock.sleep(max(0.0, due - self.clock.now()))
            if s.merge != "merged" or s.repo is None or s.worktree is None:
                return
            repo, path = Path(s.repo), Path(s.worktree)
            try:
                # Someone may have worked there since the merge: then it stays, for the sweep to show and keep.
                lost = await asyncio.to_thread(
                    worktrees.unmerged_work, repo, path, s.branch, self._into(s), _copied(self.crew, s)
                )
                if lost is not None:
                    log.warning("kept the worktree of %s: %s", s.label, lost)
                    return
                await asyncio.to_thread(worktrees.remove, repo, path, s.branch)
            except BadInput as exc:
                log.warning("could not remove the worktree of %s: %s", s.label, exc)
                return
            self._event(s, "removed", note=f"worktree {s.worktree} and branch {s.branch} removed")

        task = asyncio.create_task(later(), name=f"worktree-cleanup-{s.key}")
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def _into(self, s: Session) -> str:
        config = _workspace(self.crew, s)
        return (config.into if config and config.into else None) or s.base or "main"

    # ------------------------------------------------------------------------------------ the sweep

    async def leftovers(self) -> list[SweepItem]:
        """Worktrees of ended sessions, for the stale sweep: to remove when nothing in them is lost (their work is
        merged, or there was none) and their grace is over; to keep, saying why, when they hold work not merged.
        Read from the worktrees on disk, so sessions long gone from memory are found too."""
        root = self.data_dir.worktree("-").parent
        if not root.is_dir():
            return []
        now = self.clock.now()
        items = []
        for path in sorted(root.iterdir()):
            s = self.table.sessions.get(path.name) or await self.table.store.get_session(path.name)
            if s is None or s.repo is None:
                items.append(
                    SweepItem(
                        key=path.name,
                        label=path.name,
                        idle_for=0.0,
                        reason="no session of this crew knows it: left alone",
                        kind="worktree",
                        action="keep",
                        worktree=str(path),
                    )
                )
                continue
            if s.state.live or s.merge in ("queued", "merging"):
                continue
            config = _workspace(self.crew, s)
            grace = config.cleanup_after if config is not None else DEFAULT_CLEANUP_S
            idle = now - (s.ended_at or s.updated_at or now)
            lost = await asyncio.to_thread(
                worktrees.unmerged_work, Path(s.repo), path, s.branch, self._into(s), _copied(self.crew, s)
            )
            if lost is None and idle < grace:
                continue  # its own cleanup comes at the end of the grace
            action: Literal["remove", "keep"]
            if lost is None:
                what = "merged" if s.merge == "merged" else "nothing in it is lost"
                action, reason = "remove", f"ended {short_duration(idle)} ago; {what}"
            else:
                merge = f", {s.merge.replace('_', ' ')}" if s.merge not in (None, "none") else ""
                action, reason = "keep", f"{lost}{merge}: merge or discard it"
            items.append(
                SweepItem(
                    key=s.key,
                    label=s.label,
                    idle_for=idle,
                    reason=reason,
                    kind="worktree",
                    action=action,
                    worktree=str(path),
                )
            )
        items.sort(key=lambda i: (i.action != "remove", -i.idle_for))
        return items

    async def sweep_remove(self, key: str) -> bool:
        """Remove an ended session's worktree and branch for the sweep, if nothing would be lost (checked again
        now: the user may have worked in it since the preview)."""
        s = self.table.sessions.get(key) or await self.table.store.get_session(key)
        if s is None or s.repo is None or s.worktree is None or s.state.live:
            return False
        repo, path = Path(s.repo), Path(s.worktree)
        lost = await asyncio.to_thread(
            worktrees.unmerged_work, repo, path, s.branch, self._into(s), _copied(self.crew, s)
        )
        if lost is not None:
            return False
        try:
            await asyncio.to_thread(worktrees.remove, repo, path, s.branch)
        except BadInput as exc:
            log.warning("sweep: could not remove the worktree of %s: %s", s.label, exc)
            return False
        self._event(s, "removed", note=f"worktree {s.worktree} and branch {s.branch} removed by the sweep")
        return True

    @staticmethod
    def _merge_locked(repo: Path, where: Path, *args: object) -> merging.MergeResult:
        with merging.lock(repo):
            return merging.merge_one(repo, where, *args)  # type: ignore[arg-type]

    def _merge_worktree(self, repo: str) -> Path:
        return self.data_dir.merge_worktree(hashlib.sha256(repo.encode()).hexdigest()[:16])

    # ------------------------------------------------------------------------------------ bookkeeping

    def _set(self, s: Session, merge: str, note: str | None) -> None:
        s.merge = merge  # type: ignore[assignment]
        s.merge_note = note
        s.updated_at = self.clock.now()
        self.table.store.put_session(s)

    def _event(
        self,
        s: Session,
        action: Literal[
            "queued",
            "merging",
            "merged",
            "conflict",
            "check_failed",
            "waiting",
            "discarded",
            "missing",
            "failed",
            "removed",
        ],
        files: list[str] | None = None,
        note: str | None = None,
        commit: str | None = None,
    ) -> None:
        self.bus.publish(
            WorkspaceChanged(
                session=s.key,
                label=s.label,
                action=action,
                branch=s.branch,
                merge=s.merge,
                files=files or [],
                note=note,
                commit=commit,
                changes=s.changes,
            )
        )
