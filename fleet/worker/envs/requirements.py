"""Where a task's requirements come from, and their normal form.

Source, first found: the task's own ``requirements`` (``packages`` list and/or
``file`` text); else the repository's ``requirements.txt``; else its
``pyproject.toml`` (poetry mode when poetry is the manager or a
``poetry.lock`` exists, else the ``[project] dependencies`` that
``pip install .`` would install).

The normal form is the cache key's: comments, blank lines and duplicates
dropped, names canonical (``Six`` -> ``six``), specifiers sorted, lines
sorted.  A line that points at a local path (``-e .``, ``./pkg``, ``-r
other.txt``) is made absolute against the repository and makes the
environment non-cacheable: its contents are not in the key.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from fleet.core.models import TaskRequirements
from fleet.worker.envs.builder import EnvBuildError, Requirements

log = logging.getLogger(__name__)

_FILE_OPTIONS = ("-r", "--requirement", "-c", "--constraint")
_PATH_OPTIONS = (*_FILE_OPTIONS, "-e", "--editable")


def _logical_lines(texts: Iterable[str]) -> list[str]:
    """Split, join ``\\`` continuations, drop comments and blanks."""
    out: list[str] = []
    pending = ""
    for text in texts:
        for raw in text.splitlines():
            line = pending + raw
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1]
                continue
            if line.lstrip().startswith("#"):
                continue
            cut = line.find(" #")
            line = (line[:cut] if cut >= 0 else line).strip()
            if line:
                out.append(line)
    if pending.strip():
        out.append(pending.strip())
    return out


def _canonical(req: Requirement) -> str:
    text = str(canonicalize_name(req.name))
    if req.extras:
        text += "[" + ",".join(sorted(canonicalize_name(e) for e in req.extras)) + "]"
    text += str(req.specifier)
    if req.url:
        text += f" @ {req.url}"
    if req.marker is not None:
        text += f" ; {req.marker}"
    return text


def _is_local(target: str) -> bool:
    return target.startswith((".", "/", "~", "file:"))


def normalize(texts: Iterable[str], base: Path | None = None) -> tuple[tuple[str, ...], bool]:
    """(sorted canonical lines, cacheable)."""
    lines: set[str] = set()
    cacheable = True
    for line in _logical_lines(texts):
        option, _, rest = line.partition(" ")
        if option in _PATH_OPTIONS:
            target = rest.strip()
            is_path = option in _FILE_OPTIONS or _is_local(target)
        else:
            target, is_path = line, _is_local(line)
        if is_path:
            cacheable = False
            if base is not None and not target.startswith(("/", "~", "file:")):
                target = str(base / target)
            lines.add(f"{option} {target}" if option in _PATH_OPTIONS else target)
        elif option in _PATH_OPTIONS:
            lines.add(line)  # -e git+https://...
        else:
            try:
                lines.add(_canonical(Requirement(line)))
            except InvalidRequirement:
                lines.add(line)  # pip options (--index-url ...) and forms packaging does not know
    return tuple(sorted(lines)), cacheable


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes() if path.is_file() else b"")
    return h.hexdigest()


def from_task(requirements: TaskRequirements, base: Path | None) -> Requirements | None:
    packages, text = requirements.packages, requirements.file
    if not packages and not text.strip():
        return None
    lines, cacheable = normalize([*map(str, packages), text], base)
    return Requirements(lines=lines, source="task", cacheable=cacheable)


def gather(requirements: TaskRequirements, code_dir: Path | None, manager: str) -> Requirements | None:
    """The task's requirements, else the repository's; None when there are none."""
    found = from_task(requirements, code_dir)
    if found is not None or code_dir is None:
        return found
    req_txt = code_dir / "requirements.txt"
    if req_txt.is_file():
        lines, cacheable = normalize([req_txt.read_text(errors="replace")], code_dir)
        return Requirements(lines=lines, source="requirements.txt", cacheable=cacheable)
    pyproject = code_dir / "pyproject.toml"
    if not pyproject.is_file():
        return Requirements(source="none")
    lock = code_dir / "poetry.lock"
    if manager == "poetry" or lock.is_file():
        return Requirements(source="poetry", project=code_dir, digest=_digest(pyproject, lock))
    if sys.version_info >= (3, 11):  # imported here: off the path of a requirements.txt (prepare's start-up)
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef, import-not-found, unused-ignore]
    try:
        data = tomllib.loads(pyproject.read_text(errors="replace"))
    except tomllib.TOMLDecodeError as exc:
        raise EnvBuildError(f"pyproject.toml: {exc}") from None
    deps = data.get("project", {}).get("dependencies", [])
    lines, cacheable = normalize([str(d) for d in deps] if isinstance(deps, list) else [], code_dir)
    return Requirements(lines=lines, source="pyproject.toml", cacheable=cacheable)
