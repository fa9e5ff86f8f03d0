"""Task logs: stamps, partial lines, attempts, the size cap."""

from __future__ import annotations

import re
from pathlib import Path

from fleet.core.tasklog import MAX_PARTIAL, TaskLog, stamp, strip_stamp

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_task_log_stamps_and_joins_partial_lines(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "t.log", 1 << 20)
    log.feed(b"hel")
    log.feed(b"lo\nwor")
    assert [strip_stamp(line) for line in _lines(log.path)] == ["hello"]
    log.feed(b"ld\r\nthree\r\n")
    log.feed(b"no newline")
    log.note("ended")
    log.close()
    lines = _lines(log.path)
    assert all(STAMP.match(line) for line in lines)
    assert [strip_stamp(line) for line in lines] == ["hello", "world", "three", "[fleet] ended", "no newline"]
    assert log.tail == ["hello", "world", "three", "no newline"]
    assert log.size == log.path.stat().st_size


def test_task_log_appends_across_attempts(tmp_path: Path) -> None:
    first = TaskLog(tmp_path / "t.log", 1 << 20)
    first.feed(b"one\n")
    first.close()
    second = TaskLog(tmp_path / "t.log", 1 << 20)
    assert second.size == (tmp_path / "t.log").stat().st_size
    second.feed(b"two\n")
    second.close()
    assert [strip_stamp(line) for line in _lines(tmp_path / "t.log")] == ["one", "two"]


def test_task_log_long_partial_line_is_written(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "t.log", 1 << 20)
    log.feed(b"x" * (MAX_PARTIAL + 1))
    assert [len(strip_stamp(line)) for line in _lines(log.path)] == [MAX_PARTIAL + 1]
    log.close()


def test_task_log_cap_writes_one_note(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "t.log", 1 << 20)
    line = b"y" * 999 + b"\n"
    for _ in range(1500):
        log.feed(line)
    log.note("still written")
    log.feed(line)
    log.close()
    lines = _lines(log.path)
    notes = [x for x in lines if "log limit" in x]
    assert len(notes) == 1 and "log limit of 1 MB reached" in notes[0]
    assert lines[-1].endswith("[fleet] still written")
    assert log.path.stat().st_size <= (1 << 20) + 300
    assert sum(1 for x in lines if x.endswith("y")) == (1 << 20) // (len(line) + 25)


def test_task_log_cap_note_names_fractional_limit(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "t.log", 512 * 1024)
    log.feed(b"z" * 600_000 + b"\n")
    log.close()
    assert "log limit of 0.5 MB" in log.path.read_text()


def test_strip_stamp() -> None:
    assert strip_stamp("2026-11-25T20:51:31.123Z text here") == "text here"
    assert strip_stamp(f"{stamp(0.5)} x") == "x"
    assert stamp(0.5) == "1970-01-01T00:00:00.500Z"
    assert strip_stamp("plain line") == "plain line"
    assert strip_stamp("2026-11-25T20:51:31Z short stamp") == "2026-11-25T20:51:31Z short stamp"
    assert strip_stamp("") == ""
