"""Bounded output reading: new lines since an offset (partial, invalid UTF-8, huge lines, truncation),
the last lines of a file, and how a session's result is found."""

from __future__ import annotations

import json
from pathlib import Path

from crewtui.locations import SessionDir
from crewtui.runtime.tail import MAX_LINE_CHARS, find_result, read_new, tail_lines


def test_partial_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(b"first\nsec")
    lines, offset, consumed = read_new(log, 0)
    assert (lines, offset, consumed) == (["first"], 6, 6)
    assert read_new(log, offset) == ([], 6, 0)
    with log.open("ab") as f:
        f.write(b"ond\nthird\n")
    assert read_new(log, offset) == (["second", "third"], 19, 13)
    assert read_new(log, 19) == ([], 19, 0)


def test_empty_lines_and_crlf(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(b"\n\nwin\r\n")
    assert read_new(log, 0)[0] == ["", "", "win"]


def test_missing_file(tmp_path: Path) -> None:
    assert read_new(tmp_path / "nope.log", 7) == ([], 7, 0)
    assert tail_lines(tmp_path / "nope.log", 5) == []


def test_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(b"ok \xff\xfe end\n\xe2\x82\xac\n")
    lines, _, _ = read_new(log, 0)
    assert lines == ["ok \ufffd\ufffd end", "\u20ac"]


def test_lines_are_capped(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(b"x" * 10_000 + b"\n" + "é".encode() * 5000 + b"\nshort\n")
    lines, offset, _ = read_new(log, 0)
    assert [len(line) for line in lines] == [MAX_LINE_CHARS, MAX_LINE_CHARS, 5]
    assert lines[1] == "é" * MAX_LINE_CHARS
    assert offset == log.stat().st_size


def test_huge_line_without_newline_cannot_stall(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(b"a" * (2 << 20))
    lines, offset, consumed = read_new(log, 0, max_bytes=1 << 20)
    assert lines == ["a" * MAX_LINE_CHARS]
    assert offset == consumed == 1 << 20
    # The rest of that line was already shown (truncated): it is skipped, not shown again.
    lines, offset, consumed = read_new(log, offset, max_bytes=1 << 20)
    assert (lines, offset) == ([], 2 << 20)
    with log.open("ab") as f:
        f.write(b"aaa tail of the long line\nnext\n")
    lines, offset, _ = read_new(log, offset, max_bytes=1 << 20)
    assert lines == ["next"]
    assert offset == log.stat().st_size


def test_reading_is_bounded_per_call(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)))
    seen: list[str] = []
    offset = 0
    calls = 0
    while True:
        lines, offset, consumed = read_new(log, offset, max_bytes=100)
        if not consumed:
            break
        assert consumed <= 100
        seen += lines
        calls += 1
    assert seen == [f"line {i}" for i in range(1000)]
    assert calls > 50


def test_truncated_file_is_read_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(b"new attempt\n")
    assert read_new(log, 5000) == (["new attempt"], 12, 12)


def test_tail_lines(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(100_000)))
    assert tail_lines(log, 3) == ["line 99997", "line 99998", "line 99999"]
    assert tail_lines(log, 0) == []
    # Bounded: never more than max_bytes from the end, and no line cut in half.
    bounded = tail_lines(log, 10_000, max_bytes=1000)
    assert 0 < len(bounded) < 100
    assert bounded[-1] == "line 99999"
    assert all(line.startswith("line ") and len(line) == 10 for line in bounded)


def test_tail_lines_keeps_unterminated_last_line(tmp_path: Path) -> None:
    log = tmp_path / "stdout.log"
    log.write_bytes(b"a\nb\nstill writing")
    assert tail_lines(log, 2) == ["b", "still writing"]
    assert tail_lines(log, 10) == ["a", "b", "still writing"]
    (tmp_path / "empty.log").write_bytes(b"")
    assert tail_lines(tmp_path / "empty.log", 3) == []


def test_find_result_prefers_result_json(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text(json.dumps({"from": "file"}))
    (tmp_path / "stdout.log").write_text('{"from": "stdout"}\n')
    assert find_result(SessionDir(tmp_path)) == (True, {"from": "file"})


def test_find_result_last_json_line(tmp_path: Path) -> None:
    big = {"items": list(range(3000))}  # one line far longer than a display line
    (tmp_path / "stdout.log").write_text(
        '{"early": 1}\n' + json.dumps(big) + "\n" + "42\n" + '"a string"\n' + "done, bye\n" + "{not json\n"
    )
    assert find_result(SessionDir(tmp_path)) == (True, big)


def test_find_result_array_and_broken_result_file(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text("{half")
    (tmp_path / "stdout.log").write_bytes(b"  [1, 2]  \n\xff\xfe\n")
    assert find_result(SessionDir(tmp_path)) == (True, [1, 2])


def test_find_result_none(tmp_path: Path) -> None:
    assert find_result(SessionDir(tmp_path)) == (False, None)
    (tmp_path / "stdout.log").write_text("hello\n3.5\nnull\ntrue\n")
    assert find_result(SessionDir(tmp_path)) == (False, None)
