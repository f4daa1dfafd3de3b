"""Completion-rate meters per cron job: the current run's done/spawned as a bar, recent runs as a sparkline.

A DataTable with stable row keys (job names) and column keys; only cells whose content changed are
updated. Once a run's sessions report tokens or cost, the current run's spend (summed) gets a column. The row
under the cursor is the job `t` triggers. Job names and schedules are shown through `plain`.
"""

from __future__ import annotations

import contextlib

from rich.text import Text
from textual.coordinate import Coordinate
from textual.widgets import DataTable

from crewtui.formatting import relative
from crewtui.model import CronJobInfo, CronRun, SessionState
from crewtui.ui.book import SessionBook, usage
from crewtui.ui.format import DIM, bar, plain, rate_color, rate_text, sparkline, usage_text

BAR_W = 6
HISTORY = 10  # runs in the sparkline

SPEND_W = 11  # "45.2k $1.27"

COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    ("job", "job", 15),
    ("next", "next", 6),
    ("run", "current run", BAR_W + 6),
    ("history", "recent", HISTORY),
    ("last", "last", 4),
    ("schedule", "schedule", None),
)
# Once a run's sessions report tokens or cost (agents with a preset), the current run's spend follows its bar.
# The sparkline gives up two runs to it, so the rates stay in view at 140 columns.
SPEND_COLUMNS: tuple[tuple[str, str, int | None], ...] = (
    *COLUMNS[:3],
    ("spend", "run spend", SPEND_W),
    ("history", "recent", HISTORY - 2),
    *COLUMNS[4:],
)


def run_progress(run: CronRun, book: SessionBook) -> tuple[int, int, bool]:
    """(done, spawned, final) of a run; an open run is counted from the dashboard's live session copy."""
    spawned = run.counts.get("spawned", len(run.sessions) + len(run.refused))
    done = run.counts.get("done", 0)
    if not run.final and run.sessions:
        known = [book.sessions[k] for k in run.sessions if k in book.sessions]
        if len(known) == len(run.sessions):
            done = sum(1 for s in known if s.state == SessionState.DONE)
    return done, spawned, run.final


class CronMeters(DataTable[Text]):
    """One row per cron job."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, show_cursor=True)
        self.jobs: list[CronJobInfo] = []
        self.runs: dict[str, list[CronRun]] = {}
        self._cells: dict[tuple[str, str], Text] = {}
        self.columns_shown = COLUMNS
        self._select_after: str | None = None

    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        for key, label, width in self.columns_shown:
            self.add_column(Text(label, style=f"bold {DIM}"), key=key, width=width)

    def _show_spend(self) -> None:
        """The first spend: the columns are laid out again with it (once; every later change is a cell's)."""
        job = self.selected_job
        self.columns_shown = SPEND_COLUMNS
        self.clear(columns=True)
        self._cells.clear()
        self._add_columns()
        self._select_after = job

    @property
    def selected_job(self) -> str | None:
        if not self.row_count or self.cursor_row < 0:
            return None
        try:
            return self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value
        except Exception:  # the table changed under the cursor
            return None

    def set_data(self, jobs: list[CronJobInfo], runs: dict[str, list[CronRun]], book: SessionBook, now: float) -> None:
        self.jobs = jobs
        self.runs = runs
        wanted = {j.name for j in jobs}
        for row_key in list(self.rows):
            if row_key.value not in wanted:
                self.remove_row(row_key)
                for col, *_ in self.columns_shown:
                    self._cells.pop((str(row_key.value), col), None)
        self.refresh_cells(book, now)

    def refresh_cells(self, book: SessionBook, now: float) -> None:
        """Recompute every job's cells and update only the ones that changed."""
        all_cells = [(job, self._cells_for(job, book, now)) for job in self.jobs]
        if self.columns_shown is COLUMNS and any(cells["spend"] for _, cells in all_cells):
            self._show_spend()
            all_cells = [(job, self._cells_for(job, book, now)) for job in self.jobs]  # the sparkline is shorter
        present = {rk.value for rk in self.rows}
        for job, cells in all_cells:
            if job.name not in present:
                self.add_row(*(cells[c] for c, *_ in self.columns_shown), key=job.name)
                for c, *_ in self.columns_shown:
                    self._cells[(job.name, c)] = cells[c]
                continue
            for c, *_ in self.columns_shown:
                if self._cells.get((job.name, c)) != cells[c]:
                    self._cells[(job.name, c)] = cells[c]
                    self.update_cell(job.name, c, cells[c])
        if self._select_after is not None:
            job_name, self._select_after = self._select_after, None
            with contextlib.suppress(Exception):  # the job went meanwhile
                self.move_cursor(row=self.get_row_index(job_name))

    def _cells_for(self, job: CronJobInfo, book: SessionBook, now: float) -> dict[str, Text]:
        runs = self.runs.get(job.name, [])
        spend = Text()
        if runs and runs[0].sessions:
            spend = usage_text(*usage(book.sessions[k] for k in runs[0].sessions if k in book.sessions), short=True)
        if job.payload != "spawn":
            run_cell = Text(f"({job.payload})", style=DIM)
            history = Text("")
            last = Text("  –", style=DIM)
        elif not runs:
            run_cell = Text("no run yet", style=DIM)
            history = Text("")
            last = rate_text(job.last_rate)
        else:
            done, spawned, final = run_progress(runs[0], book)
            color = rate_color(done / spawned if spawned else None) if final else "#61afef"
            run_cell = bar(done, spawned, BAR_W, color)
            run_cell.append(f" {done}/{spawned}", style="" if final else "bold")
            shown = next(w for c, _, w in self.columns_shown if c == "history") or HISTORY
            finals = [r for r in reversed(runs[:shown]) if r.final]
            history = sparkline([r.rate for r in finals])
            last = rate_text(finals[-1].rate if finals else job.last_rate)
        next_in = relative(job.next_fire, now).removeprefix("in ") if job.next_fire else "-"
        next_cell = Text(next_in, style=DIM)
        return {
            "job": plain(job.name, "bold"),
            "next": next_cell,
            "run": run_cell,
            "spend": spend,
            "history": history,
            "last": last,
            "schedule": plain(job.schedule, DIM),
        }
