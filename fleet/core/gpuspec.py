"""GPU specs: ``0``, ``0,1``, ``0-7``, ``0-3,6``, MIG slices ``0:0-6`` and ``all``.

Explicit indices work as logical GPUs on a machine without an NVIDIA driver
(tasks still get ``CUDA_VISIBLE_DEVICES``); ``all`` needs NVML to know what
"all" is, and so do MIG slices.

**Units.**  What fleet hands out is a *unit*: a whole GPU, or one MIG
instance of a GPU in MIG mode.  Inside fleet a unit is an ``int`` (so the
allocator, the store and the worker rows need no second kind of GPU): a
whole GPU is its NVML index, MIG instance ``s`` of GPU ``g`` is
``MIG_BASE + g * MIG_STRIDE + s``.  People never see that number: every
label (``status``, worker ids, task objects, the page, Prometheus) writes a
MIG unit as ``g:s``.  A GPU and one of its own slices are never both
allocatable: a GPU in MIG mode is handed out by its slices only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Protocol

from fleet.core.errors import UsageError

log = logging.getLogger(__name__)

_PART = re.compile(r"^(\d+)(?:-(\d+))?$")
_MIG_PART = re.compile(r"^(\d+):(\d+)(?:-(\d+))?$")
MAX_GPUS = 1024
MIG_BASE = 100_000
MIG_STRIDE = 100  # NVML allows at most 7 instances per GPU today
EXPECTED = "expected GPU indices like 0, 0,1, 0-7, 0-3,6, MIG slices like 0:0-6, or all"


def mig_unit(gpu: int, slice_: int) -> int:
    return MIG_BASE + gpu * MIG_STRIDE + slice_


def is_mig(unit: int) -> bool:
    return unit >= MIG_BASE


def parent_gpu(unit: int) -> int:
    """The physical GPU a unit lives on (itself for a whole GPU)."""
    return (unit - MIG_BASE) // MIG_STRIDE if is_mig(unit) else unit


def gpu_label(unit: int) -> str:
    """``3`` for a whole GPU, ``0:3`` for MIG instance 3 of GPU 0."""
    if not is_mig(unit):
        return str(unit)
    return f"{parent_gpu(unit)}:{(unit - MIG_BASE) % MIG_STRIDE}"


def gpu_json(unit: int) -> int | str:
    """A unit in JSON answers: the index for a whole GPU, ``"0:3"`` for a MIG slice."""
    return gpu_label(unit) if is_mig(unit) else unit


def parse_gpu_list(spec: str) -> list[int]:
    """Parse explicit indices and MIG slices; refuse descending ranges, duplicates,
    and a GPU given both whole and by a slice."""
    text = spec.strip()
    if not text:
        raise UsageError(f"--gpus {spec!r}: {EXPECTED}", field="gpus")
    out: list[int] = []
    seen: set[int] = set()
    for raw in text.split(","):
        part = raw.strip()
        match = _PART.match(part)
        mig = _MIG_PART.match(part)
        if not match and not mig:
            raise UsageError(f"--gpus {spec!r}: {part!r} is not an index or range; {EXPECTED}", field="gpus")
        if mig:
            gpu, lo = int(mig.group(1)), int(mig.group(2))
            hi = int(mig.group(3)) if mig.group(3) is not None else lo
            if hi >= MIG_STRIDE:
                raise UsageError(
                    f"--gpus {spec!r}: MIG slice {hi} of GPU {gpu}; at most {MIG_STRIDE - 1}", field="gpus"
                )
        else:
            assert match is not None
            gpu, lo = -1, int(match.group(1))
            hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            better = f"{gpu}:{hi}-{lo}" if mig else f"{hi}-{lo}"
            raise UsageError(f"--gpus {spec!r}: range {part} goes down; write it as {better}", field="gpus")
        if max(hi, gpu) >= MAX_GPUS or len(out) + hi - lo + 1 > MAX_GPUS:
            raise UsageError(f"--gpus {spec!r}: more than {MAX_GPUS} GPUs", field="gpus")
        for index in range(lo, hi + 1):
            unit = mig_unit(gpu, index) if mig else index
            if unit in seen:
                raise UsageError(f"--gpus {spec!r}: GPU {gpu_label(unit)} is given twice", field="gpus")
            seen.add(unit)
            out.append(unit)
    whole_and_sliced = {u for u in out if not is_mig(u)} & {parent_gpu(u) for u in out if is_mig(u)}
    if whole_and_sliced:
        g = min(whole_and_sliced)
        raise UsageError(
            f"--gpus {spec!r}: GPU {g} is given whole and by its MIG slices; a GPU is handed out one way", field="gpus"
        )
    return out


def overlap(a: list[int] | None, b: list[int] | None) -> int | None:
    """A unit of ``a`` that ``b`` also holds, whole GPU and its slices counting as one; None if none."""
    gpus_b = {parent_gpu(u) for u in b or []}
    units_b = set(b or [])
    for unit in sorted(a or []):
        if unit in units_b or (not is_mig(unit) and unit in gpus_b) or (is_mig(unit) and parent_gpu(unit) in units_b):
            return unit
    return None


class _Unit(Protocol):
    @property
    def unit(self) -> int: ...


class Inventory(Protocol):
    """What :func:`resolve_gpus` asks of NVML (:class:`fleet.core.nvml.Nvml`, which
    numbers MIG units with this module's functions, so this module names no type of it)."""

    @property
    def available(self) -> bool: ...

    def device_count(self) -> int: ...

    def units(self) -> Sequence[_Unit]: ...


def resolve_gpus(spec: str, nvml: Inventory) -> tuple[list[int], list[str]]:
    """Turn a spec into units; also return warnings for the user."""
    warnings: list[str] = []
    if spec.strip().lower() == "all":
        if not nvml.available:
            raise UsageError(
                "--gpus all: no NVIDIA driver here (NVML unavailable); give explicit indices such as 0-3 to use logical GPUs",
                field="gpus",
            )
        units = [u.unit for u in nvml.units()]
        if not units:
            raise UsageError("--gpus all: NVML reports no GPUs", field="gpus")
        return units, warnings
    indices = parse_gpu_list(spec)
    if nvml.available:
        _check_against_nvml(spec, indices, nvml)
    elif any(is_mig(u) for u in indices):
        raise UsageError(f"--gpus {spec!r}: MIG slices need NVML, and there is no NVIDIA driver here", field="gpus")
    else:
        warnings.append(
            f"no NVIDIA driver: GPUs {format_gpus(indices)} are logical (tasks get CUDA_VISIBLE_DEVICES); no GPU metrics are available"
        )
    return indices, warnings


def _check_against_nvml(spec: str, indices: list[int], nvml: Inventory) -> None:
    count = nvml.device_count()
    missing = [i for i in indices if parent_gpu(i) >= count]
    if missing:
        raise UsageError(
            f"--gpus {spec!r}: this host has {count} GPU(s) (0-{count - 1}); no GPU {parent_gpu(missing[0])}",
            field="gpus",
        )
    units = {u.unit for u in nvml.units()}
    for unit in indices:
        if unit in units:
            continue
        if is_mig(unit):
            raise UsageError(
                f"--gpus {spec!r}: GPU {parent_gpu(unit)} has no MIG instance {gpu_label(unit)} "
                f"(MIG instances here: {format_gpus(sorted(u for u in units if is_mig(u))) or 'none'})",
                field="gpus",
            )
        raise UsageError(
            f"--gpus {spec!r}: GPU {unit} is in MIG mode; give its slices ({format_gpus(sorted(u for u in units if is_mig(u) and parent_gpu(u) == unit))})",
            field="gpus",
        )


def format_gpus(indices: list[int] | None) -> str:
    """``0,1,2`` for whole GPUs (as CUDA_VISIBLE_DEVICES and worker ids have them);
    consecutive MIG slices of one GPU as a range (``0:0-6``), as ``--gpus`` takes them."""
    parts: list[str] = []
    run: list[int] = []  # consecutive MIG units of one GPU

    def flush() -> None:
        if run:
            first, last = gpu_label(run[0]), gpu_label(run[-1]).split(":")[1]
            parts.append(first if len(run) == 1 else f"{first}-{last}")
            run.clear()

    for unit in indices or []:
        if is_mig(unit) and run and unit == run[-1] + 1 and parent_gpu(unit) == parent_gpu(run[0]):
            run.append(unit)
            continue
        flush()
        if is_mig(unit):
            run.append(unit)
        else:
            parts.append(str(unit))
    flush()
    return ",".join(parts)
