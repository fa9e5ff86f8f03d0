"""MIG instances are GPUs too (issue 17, part 2).

A GPU in MIG mode is handed out by its slices: ``--gpus 0:0-6`` or ``all``, static
workers and dynamic pools, each slice named to the task by its ``MIG-...`` UUID, a
task never holding a whole GPU and a slice.  NVML here is the STAND-IN ``pynvml``
(tests/standin_nvml), shaped like nvidia-ml-py's MIG calls: this machine has no GPU,
let alone an A100/H100 in MIG mode.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fleet.core.errors import UsageError
from fleet.core.gpuspec import format_gpus, gpu_json, mig_unit, overlap, parse_gpu_list, resolve_gpus
from fleet.core.nvml import Nvml
from fleet.policy.allocate import Head, allocate
from fleet.policy.queuespec import parse_queue_spec
from tests.conftest import Fleet
from tests.nvml_standin import load_standin, use_standin

PRINT_ENV = "import os, time; print('CVD=' + os.environ['CUDA_VISIBLE_DEVICES'], flush=True); time.sleep(300)"


def test_mig_specs_parse_label_and_never_mix_a_gpu_with_its_slices() -> None:
    units = parse_gpu_list("0:0-6")
    assert units == [mig_unit(0, s) for s in range(7)]
    assert format_gpus(units) == "0:0-6" and gpu_json(units[3]) == "0:3" and gpu_json(2) == 2
    assert format_gpus(parse_gpu_list("1,0:2,0:4")) == "1,0:2,0:4"
    for bad, why in (
        ("0,0:1", "GPU 0 is given whole and by its MIG slices"),
        ("0:5-2", "goes down"),
        ("0:1,0:1", "GPU 0:1 is given twice"),
        ("0:100", "at most 99"),
        ("0:x", "not an index or range"),
    ):
        with pytest.raises(UsageError, match=why):
            parse_gpu_list(bad)
    assert overlap([0], [mig_unit(0, 3)]) == 0  # a GPU clashes with its slices
    assert overlap([mig_unit(0, 3)], [0]) == mig_unit(0, 3)
    assert overlap([mig_unit(0, 1)], [mig_unit(0, 2), 1]) is None


def test_nvml_lists_mig_instances_with_their_uuids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nvml = Nvml(load_standin(tmp_path / "nvml.json", monkeypatch, count=2, mig={"0": 3})[0])
    units = nvml.units()
    assert [u.unit for u in units] == [mig_unit(0, 0), mig_unit(0, 1), mig_unit(0, 2), 1]
    assert [u.uuid for u in units] == ["MIG-standin-0-0", "MIG-standin-0-1", "MIG-standin-0-2", "GPU-standin-0001"]
    assert nvml.uuids([1, mig_unit(0, 2)]) == ["GPU-standin-0001", "MIG-standin-0-2"]
    assert resolve_gpus("all", nvml)[0] == [u.unit for u in units]
    with pytest.raises(UsageError, match="GPU 0 is in MIG mode; give its slices"):
        resolve_gpus("0", nvml)
    with pytest.raises(UsageError, match="GPU 0 has no MIG instance 0:5"):
        resolve_gpus("0:5", nvml)
    samples = {s.index: s for s in nvml.sample()}  # metrics: what NVML gives per instance
    assert samples[mig_unit(0, 1)].memory_total_mb == 10 * 1024 and samples[mig_unit(0, 1)].utilization_percent is None
    assert samples[0].temperature_c == 40  # the card itself is still sampled


def test_allocate_gives_a_task_whole_gpus_or_slices_never_both() -> None:
    slices = [mig_unit(0, s) for s in range(3)]
    pool = [*slices, 1]
    specs = [parse_queue_spec("two=2"), parse_queue_spec("one=1")]
    decision = allocate(pool, [], {}, specs, {"two": Head("a" * 32), "one": Head("b" * 32)})
    starts = {s.queue: s.gpus for s in decision.starts}
    assert starts["two"] == (slices[0], slices[1])  # one whole GPU is not enough: two slices, not 1 + a slice
    assert starts["one"] == (1,)  # whole GPUs first
    taken = [g for s in decision.starts for g in s.gpus]
    assert len(taken) == len(set(taken))


# -- real workers over the stand-in --------------------------------------------------------


def _cvd(fleet: Fleet, task_id: str) -> str:
    def line() -> str:
        log = fleet.ok("logs", task_id, "--no-timestamps")
        return next((x[4:] for x in log.splitlines() if x.startswith("CVD=")), "")

    fleet.wait_for(lambda: bool(line()), timeout=60, what=f"task {task_id} output")
    return line()


def test_static_workers_on_mig_slices(fleet: Fleet) -> None:
    """STAND-IN NVML: GPU 0 in MIG mode with 3 instances, GPU 1 whole."""
    use_standin(fleet, count=2, mig={"0": 3})
    fleet.up("--gpus", "0:0-1", "--queue", "a", "--create-queue")
    fleet.up("--gpus", "0:2", "--queue", "b", "--create-queue")
    for spec, why in (
        ("0", "GPU 0 is in MIG mode; give its slices (0:0-2)"),
        ("0:1-2", "GPU 0:1 is already claimed by worker"),
        ("1,0:2", "whole GPUs and MIG slices together"),
    ):
        refused = fleet.cli("up", "--gpus", spec, "--queue", "c", "--create-queue")
        assert refused.returncode == 2 and why in refused.stderr, refused.stderr
    a = fleet.submit("a", sys.executable, "-c", PRINT_ENV)
    b = fleet.submit("b", sys.executable, "-c", PRINT_ENV)
    assert _cvd(fleet, a) == "MIG-standin-0-0,MIG-standin-0-1"
    assert _cvd(fleet, b) == "MIG-standin-0-2"
    assert fleet.task(a)["gpus"] == ["0:0", "0:1"] and fleet.task(b)["gpu_uuids"] == ["MIG-standin-0-2"]
    status = json.loads(fleet.ok("status", "--json"))
    assert sorted(w["gpus"] for w in status["workers"]) == [["0:0", "0:1"], ["0:2"]]
    assert "gpu0:0-1" in fleet.ok("status")
    fleet.ok("abort", a)
    fleet.ok("abort", b)


def test_dynamic_pool_hands_out_slices_without_overlap(fleet: Fleet) -> None:
    """STAND-IN NVML: ``--gpus all`` lists GPU 0's 3 MIG instances and whole GPU 1."""
    use_standin(fleet, count=2, mig={"0": 3})
    fleet.up("--gpus", "all", "--queue", "two=2", "one=1", "--create-queue")
    pair = fleet.submit("two", sys.executable, "-c", PRINT_ENV)
    assert _cvd(fleet, pair) == "MIG-standin-0-0,MIG-standin-0-1"
    singles = [fleet.submit("one", sys.executable, "-c", PRINT_ENV) for _ in range(3)]
    assert _cvd(fleet, singles[0]) == "1"  # the whole GPU, by index (CUDA_DEVICE_ORDER=PCI_BUS_ID)
    assert _cvd(fleet, singles[1]) == "MIG-standin-0-2"
    held = [g for t in (pair, *singles[:2]) for g in fleet.task(t)["gpus"]]
    assert sorted(map(str, held)) == ["0:0", "0:1", "0:2", "1"]  # no unit twice
    fleet.wait_for(lambda: "one waits" in fleet.ok("status"), what="the fourth task to wait")
    assert fleet.task(singles[2])["status"] == "queued"
    for task_id in (pair, *singles):
        fleet.ok("abort", task_id)
