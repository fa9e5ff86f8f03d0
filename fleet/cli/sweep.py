"""Sweeps for ``fleetctl submit``: ``--array`` ranges, ``--grid`` products and
``{name}`` substitution into a task's command and name.

Decisions (README, "Sweeps"):

- ``--array 0-999[:STEP][%MAX]``, also comma lists (``1,5,10-20:5``), as
  Slurm's ``sbatch --array``; at most :data:`MAX_TASKS` tasks in one call.
- ``--grid lr=0.1,0.01 bs=32,64`` is the cross product of the values, in
  the order written (the last name varies fastest).  Each name goes to the
  task's environment exactly as written (``lr``, not ``LR``: the task reads
  what the user typed) and substitutes ``{lr}``.
- ``{index}`` (and ``FLEET_ARRAY_INDEX``) is the ``--array`` value; with
  ``--grid`` alone it is the combination's place, from 0.  With both, each
  array index runs every combination (index outermost).
- Only ``{identifier}`` is a placeholder; other braces stay as written, and
  ``{{``/``}}`` write a literal brace.  A placeholder nobody defines is bad
  usage (exit 2), so a typo never runs a thousand wrong tasks.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

from fleet.core.errors import UsageError

MAX_TASKS = 10_000  # the API's bound for one batch
ARRAY_FORM = "START-END[:STEP][%MAX_RUNNING] or a comma list of them, e.g. 0-999, 0-99:2%8, 1,4,7"
GRID_FORM = "NAME=V1,V2,... (NAME: letters, digits, '_', not starting with a digit)"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_RANGE = re.compile(r"(\d+)(?:-(\d+)(?::(\d+))?)?")


@dataclass(frozen=True)
class ArrayRange:
    indices: list[int]
    max_running: int | None


def parse_array(text: str) -> ArrayRange:
    """``--array`` as Slurm writes it; bad usage naming the value otherwise."""
    spec, _, cap = text.strip().partition("%")
    max_running = None
    if cap or text.strip().endswith("%"):
        if not cap.isdigit() or int(cap) < 1:
            raise UsageError(
                f"--array {text}: %{cap} is not a count of 1 or more; expected {ARRAY_FORM}", field="array"
            )
        max_running = int(cap)
    indices: list[int] = []
    for part in spec.split(","):
        found = _RANGE.fullmatch(part.strip())
        if found is None:
            raise UsageError(f"--array {text}: {part!r} is not a range; expected {ARRAY_FORM}", field="array")
        start, end, step = int(found[1]), int(found[2] or found[1]), int(found[3] or 1)
        if end < start:
            raise UsageError(f"--array {text}: {part} ends before it starts; expected {ARRAY_FORM}", field="array")
        if step < 1:
            raise UsageError(f"--array {text}: step {step} must be 1 or more; expected {ARRAY_FORM}", field="array")
        if (end - start) // step + 1 + len(indices) > MAX_TASKS:
            raise UsageError(f"--array {text}: more than {MAX_TASKS} tasks in one call", field="array")
        indices.extend(range(start, end + 1, step))
    return ArrayRange(list(dict.fromkeys(indices)), max_running)


def parse_grid(words: list[str]) -> list[tuple[str, list[str]]]:
    """``NAME=V1,V2`` words (a word may hold several, space-separated)."""
    grid: dict[str, list[str]] = {}
    for word in (w for text in words for w in text.split()):
        name, sep, values = word.partition("=")
        items = values.split(",")
        if not sep or not _NAME.fullmatch(name) or not values or any(v == "" for v in items):
            raise UsageError(f"--grid {word}: expected {GRID_FORM}", field="grid")
        if name == "index" or name in grid:
            why = "is the array index" if name == "index" else "is given twice"
            raise UsageError(f"--grid {word}: {name} {why}; expected {GRID_FORM}", field="grid")
        grid[name] = list(dict.fromkeys(items))
    return list(grid.items())


def grid_words(command: tuple[str, ...]) -> tuple[list[str], tuple[str, ...]]:
    """The ``NAME=...`` words that follow ``--grid`` (click gives them as the
    command's first words: a program cannot be named ``NAME=...``), and the rest."""
    n = 0
    while n < len(command) and "=" in command[n] and _NAME.fullmatch(command[n].partition("=")[0]):
        n += 1
    rest = command[n:]
    if n and rest[:1] == ("--",):  # click keeps a `--` that comes after the first argument
        rest = rest[1:]
    return list(command[:n]), rest


def combinations(array: ArrayRange | None, grid: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
    """One dict of placeholder values per task, ``index`` included, in submit order."""
    names = [name for name, _ in grid]
    indices: list[int | None] = list(array.indices) if array is not None else [None]
    count = len(indices) * math.prod(len(values) for _, values in grid)
    if count > MAX_TASKS:
        raise UsageError(f"--array/--grid: {count} tasks, over the limit of {MAX_TASKS} in one call", field="array")
    products = list(itertools.product(*(values for _, values in grid)))
    out: list[dict[str, str]] = []
    for index in indices:
        for combo in products:
            values = {"index": str(index if index is not None else len(out))}
            values.update(zip(names, combo, strict=True))
            out.append(values)
    return out


def substitute(text: str, values: dict[str, str], what: str) -> str:
    """``text`` with each ``{name}`` replaced; an unknown name is bad usage naming ``what``."""

    def one(found: re.Match[str]) -> str:
        token = found.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = found.group(1)
        if name not in values:
            known = ", ".join("{" + k + "}" for k in values)
            raise UsageError(
                f"{what} {text!r}: unknown {{{name}}}; expected one of {known} ({{{{ for a brace)", field=what
            )
        return values[name]

    return _PLACEHOLDER.sub(one, text)
