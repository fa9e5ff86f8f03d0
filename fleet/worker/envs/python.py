"""Which Python an environment is built on, resolved once per host.

Strongest first: the task's requested version (``requirements.python_version``,
``"3.10"`` or ``"3.10.4"``) when this host has it, then ``agent.python_binary``,
then the interpreter fleet itself runs on.  A requested version that is not
here is a warning, not a failure (ClearML Agent does the same).

A candidate is probed once (``-c 'print(sys.executable, version)'``) and the
answer kept in ``$FLEET_HOME/cache/pythons.json`` keyed by the candidate's path
and mtime, so a pyenv shim is run at most once, never per task.  Candidates
for a version: ``pythonX.Y`` on PATH and ``$PYENV_ROOT/versions/X.Y*/bin/pythonX.Y``
(a pyenv shim refuses versions that are not "global", the real binary does not).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from fleet.worker.envs.builder import EnvBuildError, Interpreter

log = logging.getLogger(__name__)

PROBE = "import sys; print(sys.executable); print('%d.%d.%d' % sys.version_info[:3])"
PROBE_TIMEOUT_S = 30


def fleet_python() -> Interpreter:
    """The interpreter fleet runs on; a venv's python resolved to its base binary."""
    exe = os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
    return Interpreter(exe, ".".join(map(str, sys.version_info[:3])))


class PythonFinder:
    def __init__(self, cache_file: Path, env: Mapping[str, str] | None = None) -> None:
        self.cache_file = cache_file
        self.env = os.environ if env is None else env

    def find(self, requested: str, configured: str, warn: Callable[[str], None]) -> Interpreter:
        if requested:
            found = self._version(requested)
            if found is not None:
                return found
            warn(f"Python {requested} is not installed on this host; using the configured one")
        if configured:
            found = self.probe(configured)
            if found is None:
                raise EnvBuildError(f"agent.python_binary {configured!r} is not a working Python interpreter")
            return found
        return fleet_python()

    def _version(self, requested: str) -> Interpreter | None:
        parts = requested.strip().removeprefix("python").split(".")
        minor = ".".join(parts[:2])
        if len(parts) < 2 or not all(p.isdigit() for p in parts):
            raise EnvBuildError(f"python_version {requested!r}: expected a version such as 3.10 or 3.10.4")
        own = fleet_python()
        if own.version == requested or own.minor == requested:
            return own
        for candidate in self._candidates(minor):
            found = self.probe(candidate)
            if found is not None and (found.version == requested or found.minor == requested):
                return found
        return None

    def _candidates(self, minor: str) -> list[str]:
        out = []
        on_path = shutil.which(f"python{minor}", path=self.env.get("PATH"))
        if on_path:
            out.append(on_path)
        pyenv = Path(self.env.get("PYENV_ROOT") or Path(self.env.get("HOME", "~")).expanduser() / ".pyenv")
        versions = pyenv / "versions"
        if versions.is_dir():
            for folder in sorted(versions.glob(f"{minor}*"), reverse=True):
                binary = folder / "bin" / f"python{minor}"
                if binary.is_file():
                    out.append(str(binary))
        return out

    def probe(self, candidate: str) -> Interpreter | None:
        """The real binary and version behind ``candidate`` (cached by path and mtime)."""
        path = shutil.which(candidate, path=self.env.get("PATH")) or candidate
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return None
        cache = self._load()
        hit = cache.get(path)
        if isinstance(hit, dict) and hit.get("mtime") == mtime and os.path.exists(str(hit.get("exe"))):
            return Interpreter(str(hit["exe"]), str(hit["version"]))
        try:
            out = subprocess.run(
                [path, "-c", PROBE], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env=dict(self.env)
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        lines = out.stdout.split()
        if out.returncode != 0 or len(lines) != 2:
            return None
        found = Interpreter(os.path.realpath(lines[0]), lines[1])
        cache[path] = {"mtime": mtime, "exe": found.executable, "version": found.version}
        self._save(cache)
        return found

    def _load(self) -> dict[str, object]:
        try:
            data = json.loads(self.cache_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, data: dict[str, object]) -> None:
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_name(f"{self.cache_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.cache_file)
