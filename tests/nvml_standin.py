"""Point a test's fleet at the stand-in ``pynvml`` (tests/standin_nvml/pynvml.py).

The stand-in is hardware this machine cannot have (no GPU here); every test that
uses it says so.  :class:`StandIn` writes the JSON the stand-in reads on every call.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import Fleet

STANDIN_DIR = Path(__file__).parent / "standin_nvml"


class StandIn:
    def __init__(self, path: Path, **state: Any) -> None:
        self.path = path
        self.state: dict[str, Any] = {"count": 2, **state}
        self.write()

    def write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.path)  # a reader never sees half a file

    def update(self, **changes: Any) -> None:
        self.state.update(changes)
        self.write()

    def event(self, gpu: int, kind: str, data: int = 0) -> None:
        self.state.setdefault("events", []).append({"gpu": gpu, "type": kind, "data": data})
        self.write()


def use_standin(fleet: Fleet, **state: Any) -> StandIn:
    """Every process of ``fleet`` (manager, workers, tasks) imports the stand-in as ``pynvml``."""
    standin = StandIn(fleet.root / "nvml.json", **state)
    fleet.env["PYTHONPATH"] = os.pathsep.join([str(STANDIN_DIR), fleet.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    fleet.env["FAKE_NVML_STATE"] = str(standin.path)
    return standin


def load_standin(path: Path, monkeypatch: pytest.MonkeyPatch, **state: Any) -> tuple[ModuleType, StandIn]:
    """The stand-in loaded in this process (under another name than ``pynvml``), over
    ``state`` written to ``path``: pass the module to :class:`fleet.core.nvml.Nvml`."""
    standin = StandIn(path, **state)
    monkeypatch.setenv("FAKE_NVML_STATE", str(path))
    spec = importlib.util.spec_from_file_location(f"standin_pynvml_{id(standin)}", STANDIN_DIR / "pynvml.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, standin
