"""The fake runtime's terminal sessions (`FakeRuntime(terminals=True)`): interactive agents on a pseudo-terminal,
with the screens `FakeRuntime.peek` answers.

pair-claude-checkout runs Claude Code interactively at the size someone attached with (80x24), its cursor in its
prompt box; pair-claude-search runs at the size a terminal session starts with (120x40), so a pane clips it;
pair-shell-migrate has ended (its last screen). Their keys sort after the fake's other sessions.
"""

from __future__ import annotations

from crewtui.model import Session, SessionState, TerminalScreen

CHECKOUT = "pair-claude-checkout"
SEARCH = "pair-claude-search"
ENDED_SHELL = "pair-shell-migrate"


def _box(lines: list[str], width: int) -> list[str]:
    inner = width - 4
    return ["╭" + "─" * (width - 2) + "╮", *(f"│ {line:<{inner}} │" for line in lines), "╰" + "─" * (width - 2) + "╯"]


def _claude(width: int, rows: int, task: str, work: list[str], prompt: str) -> tuple[list[str], tuple[int, int]]:
    """A Claude Code screen: its banner, the conversation, its prompt box under it with the cursor in it."""
    top = [
        *_box(
            [
                "✻ Welcome to Claude Code!",
                "",
                "  /help for help, /status for your current setup",
                "",
                "  cwd: /home/ada/src/shop",
            ],
            min(width, 58),
        ),
        "",
        f"> {task}",
        "",
    ]
    bottom = [*_box([f"> {prompt}"], width), "  ? for shortcuts"]
    lines = (top + work + [""] + bottom)[-rows:]  # a full screen scrolled: its top lines went up
    cursor = (len(lines) - 3, 4 + len(prompt))  # in the box, after what is typed
    return lines, cursor


CHECKOUT_WORK = [
    "● I'll look at how the checkout computes the total first.",
    "",
    "● Read(src/shop/checkout.py)",
    "  └  Read 214 lines (ctrl+r to expand)",
    "",
    '● Search(pattern: "round\\(", path: "src/shop")',
    "  └  Found 3 files (ctrl+r to expand)",
    "",
    "● The total is rounded per line, then summed: three items at 0.335 come to",
    "  1.02 instead of 1.01. Rounding once, at the end, fixes it. Shall I change",
    "  checkout.py and add a test for the three-item cart?",
]

SEARCH_WORK = [
    '● Search(pattern: "def search", path: "src")',
    "  └  Found 2 files (ctrl+r to expand)",
    "",
    "● Update(src/shop/search.py)",
    "  └  Updated src/shop/search.py with 4 additions and 1 removal",
    "",
    "✶ Running the search tests… (esc to interrupt · 41s · ↓ 1.2k tokens)",
]

MIGRATE_LINES = [
    "ada@shop:~/src/shop$ alembic upgrade head",
    "INFO  [alembic.runtime.migration] Context impl PostgresqlImpl.",
    "INFO  [alembic.runtime.migration] Will assume transactional DDL.",
    "INFO  [alembic.runtime.migration] Running upgrade 3f2a -> 9c1d, add order totals",
    "ada@shop:~/src/shop$ exit",
]


def make_terminals(now: float) -> list[Session]:
    """The terminal sessions, started 12 minutes ago; the shell ran for two."""
    out = []
    for n, (label, state, last) in enumerate(
        (
            (CHECKOUT, SessionState.RUNNING, "Shall I change checkout.py and add a test for the three-item cart?"),
            (SEARCH, SessionState.RUNNING, "Running the search tests…"),
            (ENDED_SHELL, SessionState.DONE, "ada@shop:~/src/shop$ exit"),
        ),
        start=1,
    ):
        created = now - 12 * 60
        live = state.live
        out.append(
            Session(
                key=f"s-01jqfake{950 + n:018d}",
                label=label,
                state=state,
                agent="sub",
                task="interactive" if live else "alembic upgrade head",
                tty=True,
                cwd="/home/ada/src/shop",
                created_at=created,
                started_at=created + 1,
                ended_at=None if live else created + 120,
                updated_at=created + (30 if live else 120),
                exit_code=None if live else 0,
                last_line=last,
                last_output_at=now - 20 if live else created + 120,
                shim_pid=47001 + n * 2 if live else None,
                agent_pid=47002 + n * 2 if live else None,
                output_dir=f"/tmp/crew/sessions/s-01jqfake{950 + n:018d}",
            )
        )
    return out


def screen_of(s: Session) -> TerminalScreen:
    """What the session's screen shows now."""
    if s.label == CHECKOUT:
        rows, cols = 24, 80
        lines, cursor = _claude(cols, rows, "the checkout total is off by a cent", CHECKOUT_WORK, "yes, and run it")
    elif s.label == SEARCH:
        rows, cols = 40, 120
        lines, cursor = _claude(cols, rows, "make the search ignore accents", SEARCH_WORK, "")
    else:
        rows, cols = 40, 120
        lines, cursor = MIGRATE_LINES, (len(MIGRATE_LINES), 0)
    return TerminalScreen(key=s.key, label=s.label, rows=rows, cols=cols, lines=lines, cursor=cursor, live=s.state.live)
