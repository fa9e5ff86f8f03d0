"""Drained GPUs: by hand and for their health (issue 17, part 3).

A drained GPU gets no new task; ``status`` says why; a GPU drained for its health
(an Xid or double-bit ECC event, a counter, a lost GPU) ends the task running on it
``failed`` with the reason, retried elsewhere when it has retries left; ``undrain``
returns it; drains survive a manager restart.  Health comes from NVML, which here is
the STAND-IN ``pynvml`` (tests/standin_nvml): this machine has no GPU to fail.
Manual drains need no NVML and run on logical GPUs.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from fleet.core.nvml import Nvml, NvmlEvents
from tests.conftest import CONFIG, Fleet
from tests.nvml_standin import load_standin, use_standin

HOST = socket.gethostname()
LONG = (sys.executable, "-c", "import time; print('running', flush=True); time.sleep(300)")


def _fast_sampler(fleet: Fleet) -> None:
    (fleet.root / "fleet.conf").write_text(CONFIG + "fleet.metrics.interval: 0.3\n")


def _drained(fleet: Fleet) -> dict[str, dict[str, Any]]:
    with fleet.api() as api:
        answer = api.get("/gpus").raise_for_status().json()
    return {d["name"]: d for d in answer["drained"]}


def _reason(fleet: Fleet) -> str:
    """The state reason of the one worker."""
    (worker,) = json.loads(fleet.ok("status", "--json"))["workers"]
    return str(worker["state_reason"])


def _running_on(fleet: Fleet, task_id: str, worker: str, attempt: int = 1) -> bool:
    task = fleet.task(task_id)
    return bool(task["status"] == "in_progress" and task["worker"] == worker and task["attempt"] == attempt)


def test_drain_by_hand_undrain_and_bad_names(fleet: Fleet) -> None:
    """Logical GPUs (no NVML): a person drains GPU 0; its worker pulls nothing, GPU 1's does."""
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    fleet.up("--gpus", "1", "--queue", "q")
    out = fleet.ok("gpu", "drain", f"{HOST}:0", "--reason", "fan replaced at 14:00")
    assert f"GPU {HOST}:0 drained: fan replaced at 14:00" in out
    fleet.wait_for(lambda: "not pulling: GPU drained" in fleet.ok("status"), what="gpu0's worker to say why")
    busy = fleet.submit("q", *LONG)
    fleet.wait_for(lambda: _running_on(fleet, busy, f"{HOST}:gpu1"), what="the task on GPU 1")
    waiting = fleet.submit("q", "true")
    status = fleet.ok("status")
    assert f"{HOST}:gpu0: GPU 0 drained: fan replaced at 14:00" in status
    assert fleet.task(waiting)["status"] == "queued"  # GPU 1 is busy, GPU 0 drained: nobody takes it
    listing = fleet.ok("gpu", "list")
    assert "drained" in listing and "manual" in listing and "fan replaced" in listing

    assert "back in service" in fleet.ok("gpu", "undrain", f"{HOST}:0")
    assert fleet.cli("wait", waiting, "--timeout", "30").returncode == 0
    assert fleet.task(waiting)["worker"] == f"{HOST}:gpu0"
    assert _drained(fleet) == {}

    for name, why in (
        ("nohost", "expected HOST:INDEX"),
        (f"{HOST}:x", "expected HOST:INDEX"),
        (f"{HOST}:7", f"host {HOST} has no GPU 7 (GPUs: 0,1)"),
        ("elsewhere:0", "no host 'elsewhere' here"),
    ):
        bad = fleet.cli("gpu", "drain", name)
        assert bad.returncode == 2, bad.stderr
        assert why in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    with fleet.api() as api:
        answer = api.post("/gpus/not-a-gpu/drain", json={"reason": "x"})
        assert answer.status_code == 422 and answer.json()["field"] == "gpu"
        answer = api.post(f"/gpus/{HOST}:0/drain", json={"reason": "x" * 501})
        assert answer.status_code == 422 and answer.json()["field"] == "reason"
        answer = api.post(f"/gpus/{HOST}:0/drain", json={"reason": 5})
        assert answer.status_code == 422
    assert _drained(fleet) == {}
    fleet.ok("abort", busy)


def test_drained_gpus_survive_a_manager_restart(fleet: Fleet) -> None:
    fleet.up("--gpus", "0,1", "--queue", "q", "--create-queue")
    fleet.ok("gpu", "drain", f"{HOST}:1", "--reason", "waiting for RMA")
    fleet.ok("stop")
    fleet.up("--gpus", "0,1", "--queue", "q")
    assert _drained(fleet)[f"{HOST}:1"]["reason"] == "waiting for RMA"
    fleet.wait_for(lambda: _reason(fleet) == "not pulling: GPU drained (GPU 1: drained (waiting for RMA))")


def test_health_counter_drains_the_gpu_and_its_task_is_retried_elsewhere(fleet: Fleet) -> None:
    """STAND-IN NVML, 2 GPUs: GPU 0 starts reporting pages waiting to be retired."""
    _fast_sampler(fleet)
    standin = use_standin(fleet, count=2)
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    task_id = fleet.submit("q", *LONG, opts=("--retries", "1"))
    fleet.wait_for(lambda: _running_on(fleet, task_id, f"{HOST}:gpu0"), what="attempt 1 on GPU 0")
    fleet.up("--gpus", "1", "--queue", "q")

    standin.update(health={"0": {"retired_pending": 1}})
    fleet.wait_for(lambda: _running_on(fleet, task_id, f"{HOST}:gpu1", attempt=2), what="attempt 2 on GPU 1")
    first = fleet.task(task_id)["attempts"][0]
    assert first["status"] == "failed" and first["gpus"] == [0]
    assert first["reason"] == "GPU 0 drained for its health: retired pages pending"
    assert _drained(fleet)[f"{HOST}:0"]["source"] == "health"
    assert f"{HOST}:gpu0: GPU 0 drained: retired pages pending" in fleet.ok("status")
    with fleet.api() as api:
        scrape = api.get(fleet.url + "/metrics").text
    assert f'fleet_gpu_healthy{{gpu="0",host="{HOST}"}} 0.0' in scrape
    assert f'fleet_gpu_healthy{{gpu="1",host="{HOST}"}} 1.0' in scrape

    # undrain while the counter still reads bad: drained again at the next tick
    fleet.ok("gpu", "undrain", f"{HOST}:0")
    fleet.wait_for(lambda: f"{HOST}:0" in _drained(fleet), what="GPU 0 drained again")
    standin.update(health={})  # the GPU was reset
    fleet.ok("gpu", "undrain", f"{HOST}:0")
    after = fleet.submit("q", "true")
    assert fleet.cli("wait", after, "--timeout", "30").returncode == 0
    assert fleet.task(after)["worker"] == f"{HOST}:gpu0" and _drained(fleet) == {}
    fleet.ok("abort", task_id)


def test_nvml_events_drain_on_hardware_xids_and_ecc_not_on_program_xids(fleet: Fleet) -> None:
    """STAND-IN NVML events, a dynamic pool on GPUs 0 and 1, one task on each."""
    standin = use_standin(fleet, count=2)
    fleet.up("--gpus", "0,1", "--queue", "one=1", "--create-queue")
    first = fleet.submit("one", *LONG)
    second = fleet.submit("one", *LONG)
    fleet.wait_for(lambda: fleet.task(second)["status"] == "in_progress", what="both tasks running")
    on_gpu = {fleet.task(t)["gpus"][0]: t for t in (first, second)}
    standin.event(0, "xid", 13)  # a program's own error (graphics engine exception): no drain
    standin.event(1, "xid", 79)  # fallen off the bus
    fleet.wait_for(lambda: fleet.task(on_gpu[1])["status"] == "failed", what="GPU 1's task to fail")
    assert fleet.task(on_gpu[1])["status_reason"] == "GPU 1 drained for its health: Xid 79 (NVML critical Xid event)"
    assert set(_drained(fleet)) == {f"{HOST}:1"}
    assert fleet.task(on_gpu[0])["status"] == "in_progress"
    standin.event(0, "dbe")
    fleet.wait_for(lambda: fleet.task(on_gpu[0])["status"] == "failed", what="GPU 0's task to fail")
    assert "double-bit ECC error" in fleet.task(on_gpu[0])["status_reason"]
    late = fleet.submit("one", "true")
    fleet.wait_for(lambda: "GPU 0 drained" in fleet.ok("status") and "GPU 1 drained" in fleet.ok("status"))
    assert fleet.task(late)["status"] == "queued"  # both GPUs drained: nothing runs
    fleet.ok("gpu", "undrain", f"{HOST}:1")
    assert fleet.cli("wait", late, "--timeout", "30").returncode == 0
    assert fleet.task(late)["gpus"] == [1]


# -- NVML's side, in this process ------------------------------------------------------------


def test_nvml_health_reads_each_counter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """STAND-IN NVML with five GPUs, each condemned by another counter (or none)."""
    lib, standin = load_standin(
        tmp_path / "nvml.json",
        monkeypatch,
        count=5,
        health={"0": {"retired_pending": 1}, "1": {"remap": [0, 1, 1, 0]}, "2": {"remap": [0, 0, 0, 1]}},
        lost=[3],
    )
    assert Nvml(lib).health() == {
        0: "retired pages pending",
        1: "row remapping pending",
        2: "row remapping failed",
        3: "GPU is lost (NVML_ERROR_GPU_IS_LOST: fallen off the bus)",
    }
    standin.update(count=1, health={"0": {"ecc_uncorrected": 2}}, lost=[])
    assert Nvml(lib).health() == {0: "uncorrected (double-bit) ECC errors (2)"}


def test_nvml_events_are_read_once_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib, standin = load_standin(tmp_path / "nvml.json", monkeypatch, count=2)
    events = NvmlEvents(Nvml(lib))
    assert events.open()
    assert events.wait(10) is None  # nothing yet: the wait times out
    standin.event(1, "xid", 48)
    standin.event(0, "xid", 31)  # a program's MMU fault: not the GPU's
    standin.event(0, "dbe")
    found = [events.wait(10) for _ in range(4)]
    assert [(e.gpu, e.reason) if e else None for e in found] == [
        (1, "Xid 48 (NVML critical Xid event)"),
        None,
        (0, "double-bit ECC error (NVML event)"),
        None,
    ]
    events.close()


def test_status_json_names_drained_gpus(fleet: Fleet) -> None:
    fleet.up("--gpus", "0,1", "--queue", "q", "--create-queue")
    fleet.ok("gpu", "drain", f"{HOST}:1")
    (worker,) = json.loads(fleet.ok("status", "--json"))["workers"]
    assert worker["drained"] == {"1": "drained by api"}
