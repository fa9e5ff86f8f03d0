"""The import-cycle check (tests/importcycles.py): fleet/ has none, and the
check finds one wherever it hides (a function-level or TYPE_CHECKING import,
a relative import, ``from package import module``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.importcycles import cycles, imports, module_names

ROOT = Path(__file__).resolve().parents[2]


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _graph(root: Path) -> dict[str, set[str]]:
    known = module_names(root)
    return {name: imports(name, path, known) for name, path in known.items()}


def test_fleet_has_no_import_cycle() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "importcycles.py")], capture_output=True, text=True, check=False
    )
    assert (done.returncode, done.stdout) == (0, "")


def test_a_cycle_hidden_in_a_function_is_found(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "a.py": "import pkg.b\n",
            "b.py": "def late() -> None:\n    from pkg import a\n",
            "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.d import X\n",
            "d.py": "from .c import *\n",
            "e.py": "import pkg.a\n",  # imports into a cycle: not part of one
            "sub/__init__.py": "",
            "sub/f.py": "from .. import e\nfrom ..sub import g\n",
            "sub/g.py": "from . import f\n",
        },
    )
    assert cycles(_graph(root)) == [
        ["pkg.a", "pkg.b", "pkg.a"],
        ["pkg.c", "pkg.d", "pkg.c"],
        ["pkg.sub.f", "pkg.sub.g", "pkg.sub.f"],
    ]
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "importcycles.py"), str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "import cycle: pkg.a -> pkg.b -> pkg.a" in done.stdout.splitlines()


def test_a_long_cycle_is_shown_through_each_module(tmp_path: Path) -> None:
    root = _package(tmp_path, {"a.py": "import pkg.b\n", "b.py": "import pkg.c\n", "c.py": "import pkg.a\n"})
    assert cycles(_graph(root)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
