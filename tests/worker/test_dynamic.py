"""Dynamic GPU pools end to end: real manager, pool, per-task workers and tasks.

Each task writes what it saw (its ``CUDA_VISIBLE_DEVICES``, start and end
times) to a file, and the checks are made from that view: no two tasks that
overlap in time share a GPU, and each queue's tasks got the right count.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Fleet, alive
from tests.taskview import VIEW, views_of

HOST = socket.gethostname()


def _submit_view(fleet: Fleet, queue: str, views: Path, until: float | Path, *opts: str) -> str:
    return fleet.submit(queue, "python", "-c", VIEW, str(views), str(until), opts=opts)


def _no_gpu_shared_while_overlapping(views: dict[str, dict[str, Any]]) -> None:
    items = list(views.values())
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            if a["start"] < b["end"] and b["start"] < a["end"]:
                assert not set(a["gpus"]) & set(b["gpus"]), (a, b)


def _pool(fleet: Fleet) -> dict[str, Any]:
    with fleet.api() as api:
        worker: dict[str, Any] = api.get(f"/workers/{HOST}:dgpu").raise_for_status().json()
    return worker


def _shown(fleet: Fleet) -> dict[str, Any]:
    """What the pool last published: empty until its first turn has (a race with ``up`` otherwise)."""
    return _pool(fleet)["pool"] or {"children": [], "reservations": []}


def test_allocations_seen_by_the_tasks(fleet: Fleet, tmp_path: Path) -> None:
    fleet.up("--gpus", "0-7", "--queue", "quad=4", "dual=2", "opp=-3", "any", "--create-queue")
    views = tmp_path / "views"
    wanted: dict[str, set[int]] = {}
    for _ in range(2):
        wanted[_submit_view(fleet, "quad", views, 0.6)] = {4}
    for _ in range(4):
        wanted[_submit_view(fleet, "dual", views, 0.4)] = {2}
    for _ in range(2):
        wanted[_submit_view(fleet, "opp", views, 0.3)] = {1, 2, 3}
    wanted[_submit_view(fleet, "any", views, 0.3)] = {1}
    wanted[_submit_view(fleet, "any", views, 0.3, "--gpus", "3")] = {3}
    assert fleet.cli("wait", *wanted, "--timeout", "60").returncode == 0
    seen = views_of(views)
    assert set(seen) == set(wanted)
    for task_id, counts in wanted.items():
        task = fleet.task(task_id)
        assert len(seen[task_id]["gpus"]) in counts, (task["queue"], seen[task_id])
        assert task["gpus"] == seen[task_id]["gpus"]  # the store and the task agree
        assert task["worker"] == f"{HOST}:gpu" + ",".join(map(str, task["gpus"]))
        assert set(task["gpus"]) <= set(range(8))
    _no_gpu_shared_while_overlapping(seen)
    workers = json.loads(fleet.ok("status", "--json"))["workers"]
    assert [(w["id"], w["mode"], w["queue_specs"]) for w in workers] == [
        (f"{HOST}:dgpu", "dynamic", ["quad=4", "dual=2", "opp=1-3", "any"])
    ]
    listed = json.loads(fleet.ok("tasks", "--worker", f"{HOST}:dgpu", "--json"))  # the pool's per-task ids count
    assert {t["id"] for t in listed["tasks"]} == set(wanted)


def test_quad_starts_as_soon_as_four_gpus_free_behind_a_stream_of_duals(fleet: Fleet, tmp_path: Path) -> None:
    fleet.up("--gpus", "0-7", "--queue", "quad=4", "dual=2", "--create-queue")
    views = tmp_path / "views"
    release = [tmp_path / f"release{i}" for i in range(4)]
    first = [_submit_view(fleet, "dual", views, r) for r in release]  # all 8 GPUs, until released
    fleet.wait_for(lambda: all(fleet.task(t)["status"] == "in_progress" for t in first), what="duals running")
    stream = [_submit_view(fleet, "dual", views, 0.3) for _ in range(6)]
    quad = _submit_view(fleet, "quad", views, 0.3)
    fleet.wait_for(lambda: "reserved for quad" in fleet.ok("status"), timeout=10, what="reservation shown")

    release[0].touch()  # two GPUs free: held for the quad, not given to the duals queued behind it
    fleet.wait_for(lambda: fleet.task(first[0])["status"] == "completed", what="first dual ended")
    fleet.wait_for(lambda: [len(r["gpus"]) for r in _shown(fleet)["reservations"]][:1] == [2], what="two GPUs held")
    pool = _pool(fleet)["pool"]
    assert [r["queue"] for r in pool["reservations"]] == ["quad"] and "reserved for quad" in pool["waiting"]["dual"]
    time.sleep(0.5)
    assert all(fleet.task(t)["status"] == "queued" for t in [quad, *stream])

    release[1].touch()  # four GPUs free: the quad starts now
    assert fleet.cli("wait", quad, "--timeout", "30").returncode == 0
    for r in release[2:]:
        r.touch()
    assert fleet.cli("wait", *first, *stream, "--timeout", "60").returncode == 0
    seen = views_of(views)
    _no_gpu_shared_while_overlapping(seen)
    four_free = seen[first[1]]["end"]
    assert seen[quad]["start"] >= four_free  # how soon after is bench/ territory: on a loaded CI machine it varies
    assert all(seen[t]["start"] > seen[quad]["start"] for t in stream)
    assert sorted(seen[quad]["gpus"]) == sorted(seen[first[0]]["gpus"] + seen[first[1]]["gpus"])


def test_kill9_of_a_task_worker_frees_its_gpus_at_once(fleet: Fleet, tmp_path: Path) -> None:
    fleet.up("--gpus", "0,1", "--queue", "pair=2", "--create-queue")
    views = tmp_path / "views"
    doomed = fleet.submit("pair", "sleep", "300")
    after = _submit_view(fleet, "pair", views, 0.1)
    fleet.wait_for(lambda: fleet.task(doomed)["status"] == "in_progress", what="start")
    fleet.wait_for(lambda: bool(_shown(fleet)["children"]), what="pool shows its task worker")
    child = _pool(fleet)["pool"]["children"][0]
    assert child["worker"] == f"{HOST}:gpu0,1" and child["task"] == doomed
    fleet.wait_for(lambda: bool(fleet.task_row(doomed)["pid"]), what="task process recorded")
    task_pid = fleet.task_row(doomed)["pid"]
    assert alive(task_pid)

    os.kill(child["pid"], signal.SIGKILL)
    killed = time.time()
    fleet.wait_for(lambda: fleet.task(doomed)["status"] == "failed", timeout=10, what="task failed")
    task = fleet.task(doomed)
    assert task["status_reason"].startswith(f"worker died ({HOST}:gpu0,1 killed by SIGKILL")
    assert not alive(task_pid)
    assert fleet.cli("wait", after, "--timeout", "30").returncode == 0
    assert views_of(views)[after]["gpus"] == [0, 1]
    # freed as soon as the killed worker's task is gone, not at the pool's next poll or heartbeat
    assert views_of(views)[after]["start"] - killed < 4.0
    assert _pool(fleet)["state"] in ("idle", "busy")  # the pool itself lives on


def test_kill9_of_the_pool_fails_its_tasks_and_restarts_it(fleet: Fleet) -> None:
    fleet.up("--gpus", "0-3", "--queue", "pair=2", "--create-queue")
    tasks = [fleet.submit("pair", "sleep", "300") for _ in range(2)]
    fleet.wait_for(lambda: len(_shown(fleet)["children"]) == 2, what="both running")
    old = _pool(fleet)["pid"]
    os.kill(old, signal.SIGKILL)
    fleet.wait_for(lambda: all(fleet.task(t)["status"] == "failed" for t in tasks), timeout=10, what="failed")
    assert all(fleet.task(t)["status_reason"] == "worker died" for t in tasks)
    fleet.wait_for(lambda: _pool(fleet)["pid"] not in (None, old), timeout=15, what="pool restarted")
    again = fleet.submit("pair", "true")
    assert fleet.cli("wait", again, "--timeout", "30").returncode == 0
    assert fleet.task(again)["gpus"] == [0, 1]  # every GPU was free again


def test_pool_follows_working_hours(fleet: Fleet) -> None:
    fleet.up("--gpus", "0,1", "--queue", "pair=2", "--downtime", "00-24 SUN-SAT", "--create-queue")
    task = fleet.submit("pair", "true")
    fleet.wait_for(lambda: _pool(fleet)["state"] == "paused", what="paused by its schedule")
    time.sleep(0.5)
    assert fleet.task(task)["status"] == "queued"
    fleet.ok("force", f"{HOST}:dgpu", "on")
    assert fleet.cli("wait", task, "--timeout", "30").returncode == 0
    assert fleet.task(task)["gpus"] == [0, 1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--gpus", "0-3", "--queue", "q=0"), "'q=0': a queue needs at least 1 GPU per task"),
        (("--gpus", "0-3", "--queue", "q=5-2"), "range 5-2 goes down; write 2-5"),
        (("--gpus", "0-3", "--queue", "q=x"), "'x' is not a GPU count"),
        (("--gpus", "0-3", "--queue", "quad=8"), "'quad=8': asks for up to 8 GPUs but the pool has 4"),
        (("--gpus", "0-3", "--queue", "a=2", "a=1"), "queue 'a' is given twice"),
        (("--cpu-only", "--queue", "q=2"), "cannot go with --cpu-only"),
        (("--queue", "q=2"), "dynamic GPU queues need GPUs"),
        (("--services-mode", "--gpus", "0", "--queue", "s"), "--services-mode runs CPU-only tasks"),
        (("--services-mode", "0", "--queue", "s"), "--services-mode 0: expected at least 1"),
        (("--services-mode", "--queue", "s=2"), "GPU counts are for dynamic GPU pools"),
    ],
)
def test_bad_specs_are_refused_before_anything_starts(fleet: Fleet, args: tuple[str, ...], message: str) -> None:
    result = fleet.cli("up", "--port", "0", *args, "--create-queue")
    assert result.returncode == 2, result
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (fleet.home / "manager.json").exists()


def test_pool_gpus_are_disjoint_from_static_workers_and_submit_checks_counts(fleet: Fleet) -> None:
    fleet.up("--gpus", "0-3", "--queue", "any", "--create-queue")  # static
    clash = fleet.cli("up", "--gpus", "3-5", "--queue", "big=2")
    assert clash.returncode == 2 and f"GPU 3 is already claimed by worker {HOST}:gpu0,1,2,3" in clash.stderr
    fleet.ok("stop", f"{HOST}:gpu0,1,2,3", "--timeout", "30")
    fleet.up("--gpus", "0-3", "--queue", "pair=2", "any", "--create-queue")
    fleet.up("--gpus", "0-3", "--queue", "pair=2", "any")  # the same pool again: no change
    refused = fleet.cli("submit", "--queue", "any", "--gpus", "6", "--", "true")
    assert refused.returncode == 2
    assert "served only by dynamic GPU pools smaller than that" in refused.stderr
    with fleet.api() as api:  # the API refuses it the same way, naming the field
        body = {"command": ["true"], "working_dir": str(fleet.root), "queue": "any", "gpus": 6}
        answer = api.post("/tasks", json=body)
        assert answer.status_code == 422 and answer.json()["field"] == "gpus"
        assert api.get("/tasks").json()["total"] == 0
    # served by a static worker too: accepted, and left queued with a reason while the pool can't
    fleet.up("--gpus", "6", "--queue", "any")
    big = fleet.submit("any", "true", opts=("--gpus", "5"))
    small = fleet.submit("any", "true", opts=("--gpus", "3"))
    assert fleet.cli("wait", small, "--timeout", "30").returncode == 0
    fleet.wait_for(lambda: "asks for more GPUs than pool" in fleet.task(big)["status_reason"], what="reason")
    assert fleet.task(big)["status"] == "queued"


# A STAND-IN for NVIDIA's pynvml, the one thing these tests cannot have for real (this machine
# has no GPU).  Put first on PYTHONPATH, it answers fleet's single NVML module (fleet/core/nvml.py) with
# the GPUs, processes and topology written in $FAKE_NVML_STATE, read again on every call.
FAKE_PYNVML = """
import json, os

NVML_TEMPERATURE_GPU = 0
NVML_P2P_CAPS_INDEX_NVLINK = 2
NVML_P2P_STATUS_OK = 0


class NVMLError(Exception):
    pass


def _state():
    with open(os.environ["FAKE_NVML_STATE"]) as fh:
        return json.load(fh)


def nvmlInit():
    _state()


def nvmlDeviceGetCount():
    return int(_state()["count"])


def nvmlDeviceGetHandleByIndex(index):
    if index >= nvmlDeviceGetCount():
        raise NVMLError("Invalid Argument")
    return index


class _Proc:
    def __init__(self, pid, mb):
        self.pid = pid
        self.usedGpuMemory = mb * 1024 * 1024


def nvmlDeviceGetComputeRunningProcesses(handle):
    return [_Proc(p["pid"], p["mb"]) for p in _state().get("busy", {}).get(str(handle), [])]


def nvmlDeviceGetTopologyCommonAncestor(a, b):
    return int(_state().get("topology", {}).get(f"{min(a, b)},{max(a, b)}", 30))


def nvmlDeviceGetP2PStatus(a, b, index):
    return 1


def __getattr__(name):
    def missing(*args):
        raise NVMLError(f"{name}: not in the stand-in")

    return missing
"""


def test_gpu_aware_admission_through_the_nvml_stand_in(fleet: Fleet, tmp_path: Path) -> None:
    fake = tmp_path / "fake_nvml"
    fake.mkdir()
    (fake / "pynvml.py").write_text(FAKE_PYNVML)
    state = tmp_path / "nvml.json"
    # someone else's process (this test's own pid: fleet did not start it) holds 5000 MiB on
    # GPUs 1 and 4; 1 and 3 share a board, so a pair goes there when it can
    outsider = [{"pid": os.getpid(), "mb": 5000}]
    state.write_text(json.dumps({"count": 5, "busy": {"1": outsider, "4": outsider}, "topology": {"0,2": 0}}))
    fleet.env["PYTHONPATH"] = os.pathsep.join([str(fake), fleet.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    fleet.env["FAKE_NVML_STATE"] = str(state)

    fleet.up("--gpus", "0-3", "--queue", "pair=2", "one=1", "--create-queue")
    fleet.up("--gpus", "4", "--queue", "solo", "--create-queue")  # static: the same check before pulling
    pair = fleet.submit("pair", "sleep", "300")
    fleet.wait_for(lambda: fleet.task(pair)["status"] == "in_progress", what="pair started")
    assert fleet.task(pair)["gpus"] == [0, 2]  # the closest pair, and never the busy GPU 1
    one = fleet.submit("one", "sleep", "300")
    fleet.wait_for(lambda: fleet.task(one)["status"] == "in_progress", what="one started")
    assert fleet.task(one)["gpus"] == [3]
    waiting = fleet.submit("one", "true")
    solo = fleet.submit("solo", "true")
    fleet.wait_for(lambda: "GPU 1 skipped: 5000 MiB used by processes fleet did not start" in fleet.ok("status"))
    with fleet.api() as api:
        solo_worker = api.get(f"/workers/{HOST}:gpu4").json()
    assert "GPU busy (GPU 4: 5000 MiB used by processes fleet did not start" in solo_worker["state_reason"]
    assert fleet.task(waiting)["status"] == "queued" and fleet.task(solo)["status"] == "queued"

    state.write_text(json.dumps({"count": 5, "busy": {}}))  # the outsider is gone
    assert fleet.cli("wait", waiting, solo, "--timeout", "30").returncode == 0
    assert fleet.task(waiting)["gpus"] == [1]
    fleet.ok("abort", pair)
    fleet.ok("abort", one)
