"""How the dashboard draws workspaces: a branch's diff split per file and coloured, its merge state and mark.

Pure functions returning Rich `Text` (no widget code), used by the Changes view (widgets/changes.py), the detail
pane and the session rows. A diff is the repository's text, as `git diff` prints it: foreign. Each line is cleaned
(`crewtui.text.clean`: escapes removed, control characters made visible), its tabs expanded, and it is never read
as markup; paths and merge notes likewise.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from crewtui.model import Session
from crewtui.text import clean
from crewtui.ui.format import DIM, plain

ADDED = "#98c379"
REMOVED = "#e06c75"
HUNK = "#56b6c2"
FILE_HEADER = "bold"
TAB_SIZE = 4  # a diff read at 80 columns: a tab of 8 would push indented code off the edge
MAX_LINES = 5000  # of one file's diff drawn; the rest is `crewtui ctl diff`'s
BRANCH = "#56b6c2"
MARK = "⌥"

# merge state -> (its words, its colour)
MERGE_STYLES: dict[str, tuple[str, str]] = {
    "none": ("unmerged", "#abb2bf"),
    "queued": ("queued", "#e5c07b"),
    "merging": ("merging", "#61afef"),
    "merged": ("merged", ADDED),
    "conflict": ("conflict", f"bold {REMOVED}"),
    "check_failed": ("check failed", f"bold {REMOVED}"),
    "failed": ("merge failed", f"bold {REMOVED}"),
    "discarded": ("discarded", DIM),
}
# States that need a person: set apart above the detail's facts, their note in full.
TROUBLE = {
    "conflict": "merge conflict",
    "check_failed": "its merge check failed",
    "failed": "its merge failed (git could not write it; the target did not move)",
}


@dataclass
class FileDiff:
    """One file's part of a diff: its header lines and hunks, as git printed them."""

    path: str
    lines: list[str] = field(default_factory=list)
    status: str = "M"  # A added, D deleted, R renamed, M modified
    binary: bool = False

    def counts(self) -> tuple[int, int]:
        """(insertions, deletions) counted from the hunks; (-1, -1) for a binary file."""
        if self.binary:
            return -1, -1
        ins = dels = 0
        in_hunk = False
        for line in self.lines:
            if line.startswith("@@"):
                in_hunk = True
            elif in_hunk and line.startswith("+"):
                ins += 1
            elif in_hunk and line.startswith("-"):
                dels += 1
        return ins, dels


def _unquote(name: str) -> str:
    """A path as git quotes one with unusual characters: "a/caf\\303\\251.md" -> a/café.md."""
    if not (len(name) >= 2 and name.startswith('"') and name.endswith('"')):
        return name
    try:
        return codecs.escape_decode(name[1:-1].encode())[0].decode("utf-8", errors="replace")
    except ValueError:
        return name


def _side(name: str, prefix: str) -> str | None:
    """The path of a `--- a/P` / `+++ b/P` line's name (None for /dev/null); git ends a name with spaces in a tab."""
    name = _unquote(name[:-1] if name.endswith("\t") else name)
    if name == "/dev/null":
        return None
    return name.removeprefix(prefix)


def _header_path(header: str) -> str:
    """The path of `diff --git a/P b/P` when nothing else names it (a binary file, a mode change)."""
    rest = header.removeprefix("diff --git ")
    if rest.startswith('"'):
        end = rest.find('" ', 1)
        return _unquote(rest[: end + 1]).removeprefix("a/") if end > 0 else rest
    half = (len(rest) - 1) // 2  # "a/P b/P": the same path twice
    if rest[half : half + 3] == " b/" and rest[2:half] == rest[half + 3 :]:
        return rest[2:half]
    return rest.split(" b/", 1)[0].removeprefix("a/")


def split_diff(text: str) -> list[FileDiff]:
    """A unified diff split per file on its `diff --git` lines, in git's order; text before the first is dropped
    (there is none in what `git diff` prints)."""
    files: list[FileDiff] = []
    for line in text.splitlines():
        if line.startswith("diff --git "):
            files.append(FileDiff(path="", lines=[line]))
        elif files:
            files[-1].lines.append(line)
    for f in files:
        old = new = renamed = None
        for line in f.lines[1:]:
            if line.startswith("@@"):
                break
            if line.startswith("new file mode"):
                f.status = "A"
            elif line.startswith("deleted file mode"):
                f.status = "D"
            elif line.startswith("rename to "):
                renamed, f.status = _unquote(line.removeprefix("rename to ")), "R"
            elif line.startswith("Binary files ") or line == "GIT binary patch":
                f.binary = True
            elif line.startswith("--- "):
                old = _side(line[4:], "a/")
            elif line.startswith("+++ "):
                new = _side(line[4:], "b/")
        f.path = new or renamed or old or _header_path(f.lines[0])
    return files


def file_counts(f: FileDiff, changes: dict[str, Any] | None) -> tuple[int, int]:
    """A file's (insertions, deletions): the runtime's count when it has the file (-1 for binary), else counted
    from its hunks."""
    for entry in (changes or {}).get("files") or ():
        if isinstance(entry, dict) and entry.get("path") == f.path:
            try:
                return int(entry.get("insertions", 0)), int(entry.get("deletions", 0))
            except (TypeError, ValueError):
                break
    return f.counts()


def counts_text(ins: int, dels: int, width: int = 0) -> Text:
    """ "+18 −6" (green, red); "bin" for a binary file; each count right-aligned in `width` cells when given."""
    if ins < 0 or dels < 0:
        return Text("bin".rjust(width * 2 + 1 if width else 3), style=DIM)
    return Text.assemble(
        (f"+{ins}".rjust(width), ADDED if ins else DIM), " ", (f"−{dels}".rjust(width), REMOVED if dels else DIM)
    )


STATUS_STYLES = {"A": ADDED, "D": REMOVED, "R": HUNK, "M": "#e5c07b"}


def file_prompt(f: FileDiff, changes: dict[str, Any] | None) -> Text:
    """A file in the Changes view's list: its counts first (so they line up at any width), its status, its path."""
    out = counts_text(*file_counts(f, changes), width=5)
    out.append("  ")
    out.append(f.status, style=STATUS_STYLES.get(f.status, ""))
    out.append(" ")
    out.append_text(plain(f.path))
    return out


def diff_line(line: str, in_hunk: bool) -> Text:
    """One line of a diff, cleaned, its tabs expanded, coloured by what it is."""
    text = clean(line).expandtabs(TAB_SIZE)
    if not in_hunk:
        return Text(text, style=FILE_HEADER)
    if text.startswith("@@"):
        end = text.find("@@", 2)
        head, rest = (text[: end + 2], text[end + 2 :]) if end > 0 else (text, "")
        return Text.assemble((head, HUNK), (rest, DIM))
    if text.startswith("+"):
        return Text(text, style=ADDED)
    if text.startswith("-"):
        return Text(text, style=REMOVED)
    if text.startswith("\\"):
        return Text(text, style=f"italic {DIM}")  # "\ No newline at end of file"
    return Text(text)


def diff_text(f: FileDiff, limit: int = MAX_LINES) -> Text:
    """A file's diff: header lines bold, hunk headers cyan, added lines green, removed red."""
    out: list[Text] = []
    in_hunk = False
    for line in f.lines[:limit]:
        in_hunk = in_hunk or line.startswith("@@")
        out.append(diff_line(line, in_hunk))
    if len(f.lines) > limit:
        out.append(Text(f"… {len(f.lines) - limit:,} more lines: crewtui ctl diff shows them all", style=DIM))
    return Text("\n").join(out)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def files_total(changes: dict[str, Any] | None) -> int:
    """How many files it changed: all counted, though `files` lists only the biggest (`files_total`; older records
    have only the list)."""
    return max(len((changes or {}).get("files") or ()), _count((changes or {}).get("files_total")))


def changes_text(changes: dict[str, Any] | None) -> Text | None:
    """ "6 files +52 −11 · 2 commits"; None when nothing was counted (a live session's are counted when it ends)."""
    if not changes:
        return None
    n = files_total(changes)
    out = Text(f"{n} file{'' if n == 1 else 's'} ")
    out.append_text(counts_text(int(changes.get("insertions") or 0), int(changes.get("deletions") or 0)))
    commits = int(changes.get("commits") or 0)
    out.append(f" · {commits} commit{'' if commits == 1 else 's'}", style=DIM)
    return out


def has_workspace(s: Session) -> bool:
    return s.branch is not None and s.merge is not None


def merge_words(s: Session) -> tuple[str, str]:
    """(words, style) of a session's merge state: "unmerged", "conflict"... ("" for a live one)."""
    merge = s.merge or "none"
    if merge == "none":
        if s.state.live:
            return "", BRANCH
        if s.changes is not None and not s.changes.get("files"):
            return "no changes", DIM
    return MERGE_STYLES.get(merge, (merge, DIM))


def merge_mark(s: Session) -> Text | None:
    """A row's short mark: "⌥ merged", "⌥ conflict" in red; "⌥" alone while it works; None without a workspace."""
    if not has_workspace(s):
        return None
    words, style = merge_words(s)
    out = Text(MARK, style=BRANCH)
    if words:
        out.append(" ")
        out.append(words, style=style)
    return out


def branch_text(s: Session) -> Text:
    """ "crew/fix-login from main at 3f2c1a9"."""
    out = plain(s.branch, f"bold {BRANCH}")
    if s.base:
        out.append(" from ", style=DIM)
        out.append_text(plain(s.base))
    if s.base_commit:
        out.append(f" at {clean(s.base_commit[:7])}", style=DIM)
    return out


def merge_keys(s: Session) -> list[tuple[str, str]]:
    """What the keys can do to a session's branch now: (key, words)."""
    merge = s.merge or "none"
    if s.state.live:
        return [("c", "what it committed so far")]
    if merge == "discarded":
        return []
    if merge in ("merged", "merging"):
        return [("c", "changes")]
    again = [("m", "again")] if merge in TROUBLE else [("m", "merge")] if merge == "none" else []
    return [("c", "changes"), *again, ("D", "discard")]


def keys_text(keys: list[tuple[str, str]]) -> Text:
    """ "c changes  m merge  D discard": the keys bold, their words dim."""
    out = Text()
    for key, words in keys:
        out.append("  " if out else "")
        out.append(key, style="bold #e5c07b")
        out.append(f" {words}", style=DIM)
    return out


def merge_text(s: Session) -> Text:
    """The detail's merge row: the state, its note in one line, and what the keys can do to the branch now."""
    out = merge_mark(s) or Text()
    if s.state.live:
        out.append(" in its worktree", style=BRANCH)
    elif s.merge_note:
        out.append(": ", style=DIM)
        out.append_text(plain(s.merge_note, merge_words(s)[1]))
    keys = keys_text(merge_keys(s))
    if keys:
        out.append("  ")
        out.append_text(keys)
    return out


def trouble_block(s: Session, lines: int = 3) -> Text | None:
    """A merge that needs a person (a conflict, a failed check), set apart above the detail's facts in place of its
    merge row: what went wrong (its note's last lines) and the keys; None otherwise."""
    what = TROUBLE.get(s.merge or "")
    if what is None or s.state.live:
        return None
    head = Text()
    head.append(f" {MARK} ", style=f"bold #282c34 on {REMOVED}")
    head.append(f" {what}  ", style=f"bold {REMOVED}")
    head.append_text(keys_text(merge_keys(s)))
    note = clean(s.merge_note or "", newlines=True).splitlines()
    body = [plain(line, REMOVED) for line in note[-lines:]]
    if len(note) > lines:
        body.insert(0, Text(f"… {len(note) - lines} more lines before", style=DIM))
    return Text("\n").join([head, *body])  # no blank line after: the detail's rows must fit below it
