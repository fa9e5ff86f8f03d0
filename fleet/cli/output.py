"""Printing for people (plain fixed-width tables) and for scripts (``--json``).

Everything printed for people goes through :func:`printable`: task names,
reasons, queue tags, worker ids and log tails are set by users (or by a
task's output), and a terminal would act on an escape sequence or a carriage
return in them (recolour, retitle, overwrite the line).  Control characters
and the bidirectional overrides are shown escaped instead (``\\x1b``,
``\\r``, ``\\u202e``).  ``--json`` carries the text unchanged (JSON escapes
control characters).

Tables fit the width of the terminal (``COLUMNS`` when set, else the
terminal's own width when stdout is one): a row is one line, ids, states,
numbers and times are never cut (:data:`FIXED` columns), and names, queues,
worker ids and reasons are shortened with ``…`` to share what is left.
``--wide`` (``wide=True``) prints every cell in full.  Output to a pipe or
file without ``COLUMNS`` is not cut either (one line per row, for ``grep``).
"""

from __future__ import annotations

import json
import os
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import click

GAP = "  "
ELLIPSIS = "…"
MIN_ELASTIC = 5  # an elastic column keeps at least this many characters (or its header's)

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    if unicodedata.category(char) == "Cc" or char in _BIDI:
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every control character escaped (newlines kept if asked)."""
    if text.isprintable():
        return text
    if keep_newlines:
        return "\n".join(printable(line) for line in text.split("\n"))
    return "".join(_escape(c) for c in text)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


SHORT_ID = 8  # a task id in a table; every command that takes one takes any unique prefix of 4+

WIDE = click.option("--wide", is_flag=True, help="Every column in full: whole ids, nothing shortened.")


def short_id(task_id: str, wide: bool = False) -> str:
    return task_id if wide else task_id[:SHORT_ID]


@dataclass(frozen=True)
class Col:
    """A table column: ``fixed`` ones (ids, states, numbers, times) are never cut."""

    header: str
    fixed: bool = False
    right: bool = False  # numbers line up on the right


def width_limit(wide: bool = False) -> int | None:
    """The width tables must fit: ``COLUMNS``, else the terminal's; None = no limit."""
    if wide:
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        try:
            return os.get_terminal_size(sys.stdout.fileno()).columns
        except OSError:
            return None
    return None


def elide(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the last one ``…`` when cut."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + ELLIPSIS


def fit(cols: Sequence[Col], rows: Sequence[Sequence[str]], limit: int | None) -> list[int]:
    """Each column's width: natural when the table fits ``limit``, else the
    elastic columns share what the fixed ones leave (fairly: a narrow column
    keeps its natural width and gives the rest to the wider ones)."""
    natural = [max([len(c.header), *(len(r[i]) for r in rows)]) for i, c in enumerate(cols)]
    if limit is None or sum(natural) + len(GAP) * (len(cols) - 1) <= limit:
        return natural
    widths = list(natural)
    elastic = [i for i, c in enumerate(cols) if not c.fixed]
    room = limit - len(GAP) * (len(cols) - 1) - sum(natural[i] for i, c in enumerate(cols) if c.fixed)
    pending = sorted(elastic, key=lambda i: natural[i])
    while pending:
        share = max(room // len(pending), 0)
        i = pending.pop(0)
        floor = min(natural[i], max(len(cols[i].header), MIN_ELASTIC))
        widths[i] = max(min(natural[i], share), floor)
        room -= widths[i]
    return widths


def render(title: str | None, cols: Sequence[Col], rows: Iterable[Iterable[Any]], limit: int | None) -> list[str]:
    """The lines of a table (see the module docstring)."""
    cells = [[printable("" if v is None else str(v)) for v in row] for row in rows]
    widths = fit(cols, cells, limit)
    lines = [] if title is None else [elide(printable(title), limit) if limit else printable(title)]

    def line(values: Sequence[str]) -> str:
        parts = []
        for col, width, value in zip(cols, widths, values, strict=True):
            text = elide(value, width)
            parts.append(text.rjust(width) if col.right else text.ljust(width))
        return GAP.join(parts).rstrip()

    lines.append(line([c.header for c in cols]))
    lines.extend(line(row) for row in cells)
    return lines


def table(title: str | None, cols: Sequence[Col], rows: Iterable[Iterable[Any]], wide: bool = False) -> None:
    lines = render(title, cols, rows, width_limit(wide))
    if sys.stdout.isatty():  # the header row in bold, as a terminal shows it
        at = 0 if title is None else 1
        lines[at] = f"\x1b[1m{lines[at]}\x1b[0m"
    sys.stdout.write("\n".join(lines) + "\n")


def warn(message: str) -> None:
    label = "\x1b[33mwarning:\x1b[0m" if sys.stderr.isatty() else "warning:"
    sys.stderr.write(f"{label} {printable(message, keep_newlines=True)}\n")


def info(message: str) -> None:
    sys.stdout.write(printable(message, keep_newlines=True) + "\n")


def answer(obj: dict[str, Any], as_json: bool, text: str) -> None:
    """The object for a script (``--json``), else one line for people."""
    if as_json:
        emit_json(obj)
    else:
        info(text)
