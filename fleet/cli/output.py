"""Printing for people (rich tables) and for scripts (``--json``).

Everything printed for people goes through :func:`printable`: task names,
reasons, queue tags, worker ids and log tails are set by users (or by a
task's output), and a terminal would act on an escape sequence or a carriage
return in them (recolour, retitle, overwrite the line).  Control characters
and the bidirectional overrides are shown escaped instead (``\x1b``,
``\r``, ``\u202e``), and rich's ``[markup]`` in them is printed as it is.
``--json`` carries the text unchanged (JSON escapes control characters).
"""

from __future__ import annotations

import json
import sys
import unicodedata
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


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


def table(title: str | None, columns: list[str], rows: Iterable[Iterable[Any]]) -> None:
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False, box=None, header_style="bold")
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*(Text("" if v is None else printable(str(v))) for v in row))
    console.print(t)


def warn(message: str) -> None:
    err_console.print(Text("warning:", style="yellow"), Text(printable(message, keep_newlines=True)))


def info(message: str) -> None:
    console.print(Text(printable(message, keep_newlines=True)))
