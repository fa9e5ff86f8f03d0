"""The one small interface every package manager implements, and what they share.

An :class:`EnvBuilder` makes a Python environment in a folder (``create``),
installs a task's requirements into it (``install``) and lists what ended up
there (``freeze``).  Builders never decide *where* an environment lives or
whether it is reused: :mod:`fleet.worker.envs.cache` does that.

Every command a builder runs goes through one :data:`Runner`, which streams
the tool's output into the task log line by line, prints the command first
with passwords in URLs masked, and turns a non-zero exit into
:class:`EnvBuildError` whose message is one line: ``<what> failed: <the
tool's last line>``.  Tests swap the runner to see the commands a builder
would run (conda cannot be installed here).
"""

from __future__ import annotations

import abc
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from packaging.markers import InvalidMarker, Marker

from fleet.core.config import PackageManagerConfig
from fleet.core.errors import FleetError
from fleet.core.secrets import mask_urls

_BOX = " \t\u2502\u2570\u2500\u25b6\u00d7|:"  # uv draws its errors in boxes


class EnvBuildError(FleetError):
    """Preparing a task's environment failed; the message is the task's reason."""


def shown(argv: Sequence[str]) -> str:
    """A command as printed in the log: never run, only read by people."""
    return mask_urls(" ".join(argv))


class Log:
    """Where preparation writes: fleet's own notes are marked ``[prepare]``."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write

    def note(self, message: str) -> None:
        self.write(f"[prepare] {mask_urls(message)}")

    def line(self, text: str) -> None:
        self.write(text)


class Runner(Protocol):
    def __call__(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None, log: Log, what: str
    ) -> list[str]: ...


def run_tool(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None, log: Log, what: str) -> list[str]:
    """Run ``argv`` (never through a shell), copy its output to the log, return
    its lines; raise :class:`EnvBuildError` naming ``what`` if it fails."""
    log.note(f"$ {shown(argv)}")
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise EnvBuildError(f"{what} failed: cannot run {argv[0]}: {exc.strerror or exc}") from None
    lines: list[str] = []
    assert proc.stdout is not None
    with proc.stdout:
        for raw in proc.stdout:
            text = raw.rstrip("\n")
            lines.append(text)
            log.line(mask_urls(text))
    rc = proc.wait()
    if rc != 0:
        raise EnvBuildError(f"{what} failed: {last_words(lines) or f'exit code {rc}'}")
    return lines


_FROZEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[^\]]*\])?\s*(===?|\s@\s)")


def frozen_lines(lines: Sequence[str]) -> list[str]:
    """The package lines of a freeze (tools also chat on stderr, merged into the same stream)."""
    return sorted({mask_urls(line.strip()) for line in lines if _FROZEN.match(line.strip())})


def last_words(lines: Sequence[str]) -> str:
    """The tool's last meaningful line (uv draws boxes around its errors)."""
    for text in reversed(lines):
        cleaned = mask_urls(text.strip().strip(_BOX).strip())
        if cleaned and not cleaned.startswith(("hint", "[notice]")):
            return cleaned[:500]
    return ""


@dataclass(frozen=True)
class Requirements:
    """What to install: pip requirement lines, or a project folder (poetry)."""

    lines: tuple[str, ...] = ()
    source: str = "task"  # "task", "requirements.txt", "pyproject.toml", "poetry"
    project: Path | None = None  # folder holding pyproject.toml (+ poetry.lock) in poetry mode
    digest: str = ""  # hash of the project files when ``project`` is set
    cacheable: bool = True  # False when a line points at a local path (``-e .``)


@dataclass(frozen=True)
class Interpreter:
    executable: str  # the real binary, never a shim
    version: str  # "3.11.7"

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


@dataclass(frozen=True)
class BuildSettings:
    """The configuration a builder needs, resolved once per preparation."""

    pm: PackageManagerConfig
    env: Mapping[str, str]  # environment of the tools (caches set, the task's own values removed)
    cache_dir: Path | None  # download caches root (<dir>/pip, <dir>/uv, ...); None = no caching
    index_url: str = ""  # the primary index when one is configured for pip; "" = the tool's default
    extra_index_urls: tuple[str, ...] = field(default=())
    torch_backend: str = ""  # uv's --torch-backend (cu121) from agent.cuda_version, for requirements naming torch


Phase = tuple[str, list[str], bool]  # (label, requirement lines, optional)


def priority_phases(pm: PackageManagerConfig) -> list[Phase]:
    """Installed before the requirements; optional ones one by one, a failure tolerated."""
    phases: list[Phase] = []
    if pm.priority_packages:
        phases.append(("priority packages", list(pm.priority_packages), False))
    return phases + [("optional priority package", [p], True) for p in pm.priority_optional_packages]


def post_phases(pm: PackageManagerConfig) -> list[Phase]:
    """Installed after the requirements, in the same way."""
    phases: list[Phase] = []
    if pm.post_packages:
        phases.append(("post packages", list(pm.post_packages), False))
    return phases + [("optional post package", [p], True) for p in pm.post_optional_packages]


def install_phases(requirements: Sequence[str], pm: PackageManagerConfig) -> list[Phase]:
    """ClearML's order: priority, priority optional, the requirements, post, post optional."""
    middle: list[Phase] = [("requirements", list(requirements), False)] if requirements else []
    return priority_phases(pm) + middle + post_phases(pm)


def pip_version_spec(pip_version: str) -> str:
    """ClearML's ``pip_version`` ("<20", "==19.3.1", "20.2", "<22.3 ; python_version >= '3.10'")
    as a requirement (a marker stays: pip evaluates it against the environment's Python)."""
    spec, semi, marker = pip_version.partition(";")
    spec = spec.strip()
    req = f"pip=={spec}" if spec[:1].isdigit() else f"pip{spec}"
    return f"{req} ; {marker.strip()}" if semi and marker.strip() else req


_TORCH = re.compile(r"\s*(torch|torchvision|torchaudio)\b", re.IGNORECASE)


def names_torch(lines: Sequence[str]) -> bool:
    """Whether a requirement line names PyTorch (torch, torchvision, torchaudio)."""
    return any(_TORCH.match(line) for line in lines)


def torch_backend(cuda_version: str) -> str:
    """ClearML's ``cuda_version`` (``12.1``, ``121``, ``11.8``) as uv's ``--torch-backend`` (``cu121``)."""
    digits = "".join(ch for ch in cuda_version.strip() if ch.isdigit() or ch == ".")
    major, _, minor = digits.partition(".")
    if not major:
        return ""
    return f"cu{major}{minor.split('.')[0] if minor else ''}" if "." in digits else f"cu{digits}"


def pip_version_for(specs: Sequence[str], python_version: str) -> str:
    """The first of ``pip_version``'s specifiers whose PEP 508 marker matches
    ``python_version`` ("3.11.7"), without its marker; "" when none applies."""
    minor = ".".join(python_version.split(".")[:2])
    env = {"python_version": minor, "python_full_version": python_version}
    for item in specs:
        spec, _, marker = item.partition(";")
        if not marker.strip():
            return spec.strip()
        try:
            if Marker(marker.strip()).evaluate(env):
                return spec.strip()
        except InvalidMarker:
            raise EnvBuildError(f"package_manager.pip_version {item!r}: invalid marker") from None
    return ""


class EnvBuilder(abc.ABC):
    """One package manager.  Implementations: uv, pip, poetry, conda."""

    name: ClassVar[str]

    def __init__(self, runner: Runner = run_tool) -> None:
        self.run = runner

    @abc.abstractmethod
    def available(self) -> bool:
        """Whether this manager can be used on this host."""

    @abc.abstractmethod
    def create(self, path: Path, python: Interpreter, settings: BuildSettings, log: Log) -> None:
        """Make an empty environment at ``path`` with ``python``."""

    @abc.abstractmethod
    def install(self, path: Path, requirements: Requirements, settings: BuildSettings, log: Log) -> None:
        """Install ``requirements`` (and the configured priority/post packages)."""

    @abc.abstractmethod
    def freeze(self, path: Path, settings: BuildSettings, log: Log) -> list[str]:
        """The installed packages, one ``name==version`` (or URL) line each."""

    def bin_dir(self, path: Path) -> Path:
        return path / "bin"

    def activation(self, path: Path) -> dict[str, str]:
        """Variables that make ``path`` the active environment of a process."""
        return {"VIRTUAL_ENV": str(path)}

    def python_of(self, path: Path) -> Path:
        return self.bin_dir(path) / "python"
