"""The remote executor: ``fleet/remote_executor.py`` (the entry point of images
built by ``fleetctl build --docker``) run as a plain subprocess against a real
manager, and the API it talks to (``start``, ``log``, ``finish``)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from fleet.core.home import Home
from fleet.core.models import Runner, Script, TaskSpec, TaskStatus, Worker, WorkerMode, WorkerState
from fleet.manager.leases import Leases, starter
from fleet.store import open_store
from tests.conftest import CONFIG, Fleet

RUNNER = str(Path(__file__).resolve().parents[2] / "fleet" / "remote_executor.py")
WORKER = "box-1:image"


def _up(fleet: Fleet, config: str = "") -> None:
    if config:
        (fleet.root / "fleet.conf").write_text(CONFIG + config)
    fleet.up("--cpu-only", "--queue", "q", "--create-queue")


def _create(fleet: Fleet, **extra: Any) -> str:
    body = {"command": ["true"], "working_dir": str(fleet.root), **extra}
    with fleet.api() as api:
        task_id: str = api.post("/tasks", json=body).raise_for_status().json()["id"]
    return task_id


def _env(fleet: Fleet, **extra: str) -> dict[str, str]:
    """A remote executor's environment: the manager's URL and its token."""
    return {**fleet.env, "FLEET_API_URL": fleet.url, "FLEET_API_TOKEN": fleet.token, **extra}


def _argv(task_id: str, *command: str, clone: bool = False, worker: str | None = WORKER) -> list[str]:
    argv = [sys.executable, RUNNER, "--task", task_id]
    argv += ["--clone"] if clone else []
    argv += ["--worker", worker] if worker else []
    return [*argv, "--", *command]


def _run(fleet: Fleet, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env or _env(fleet), capture_output=True, text=True, timeout=30)


def _spawn(fleet: Fleet, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, env=_env(fleet), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _reap(runner: subprocess.Popen[str]) -> None:
    if runner.poll() is None:
        runner.kill()
    runner.communicate(timeout=10)


def _running(fleet: Fleet, task_id: str) -> None:
    fleet.wait_for(lambda: fleet.task(task_id)["status"] == "in_progress", 10, "the task to run")


def test_runner_completes_a_task_and_records_it(fleet: Fleet) -> None:
    _up(fleet)
    task_id = _create(fleet)
    code = "import os; print('hello from', os.environ['FLEET_TASK_ID'], os.environ.get('FLEET_API_TOKEN'))"
    env = _env(fleet, CUDA_VISIBLE_DEVICES="1,0")
    done = _run(fleet, _argv(task_id, sys.executable, "-c", code, worker=None), env)
    assert done.returncode == 0, done.stderr
    assert f"hello from {task_id} None" in done.stdout  # the command's output is our stdout; no token
    assert f"[fleet] running task {task_id} attempt 1" in done.stderr
    task = fleet.task(task_id)
    assert task["status"] == "completed" and task["exit_code"] == 0 and task["attempt"] == 1
    assert task["worker"].endswith(":image") and task["gpus"] == [1, 0]
    (attempt,) = task["attempts"]
    assert attempt["status"] == "completed" and attempt["worker"] == task["worker"]
    log = fleet.ok("logs", task_id)
    assert f"hello from {task_id}" in log and "remote executor" in log and "attempt 1 ended: completed" in log


def test_exit_code_is_recorded_and_returned(fleet: Fleet) -> None:
    _up(fleet)
    task_id = _create(fleet)
    done = _run(fleet, _argv(task_id, sys.executable, "-c", "import sys; print('bad input'); sys.exit(3)"))
    assert done.returncode == 3, done.stderr
    task = fleet.task(task_id)
    assert task["status"] == "failed" and task["exit_code"] == 3 and task["worker"] == WORKER
    assert "exit code 3" in task["status_reason"] and "bad input" in task["status_reason"]
    # a command that does not exist: no exit code, exit 127
    missing = _run(fleet, _argv(task_id, "/no/such/program"))
    assert missing.returncode == 127, missing.stderr
    task = fleet.task(task_id)
    assert task["status"] == "failed" and task["exit_code"] is None and task["attempt"] == 2
    assert "could not start /no/such/program" in task["status_reason"]


def test_a_failed_attempt_with_retries_left_goes_back_to_its_queue(fleet: Fleet) -> None:
    _up(fleet)
    fleet.ok("queue", "create", "later")  # no worker pulls it
    task_id = _create(fleet, retries=1, queue="later")
    done = _run(fleet, _argv(task_id, "false"))
    assert done.returncode == 1
    task = fleet.task(task_id)
    assert (task["status"], task["queue"]) == ("queued", "later"), task
    assert [a["status"] for a in task["attempts"]] == ["failed"]
    with fleet.api() as api:  # no private queue was left behind
        assert sorted(q["name"] for q in api.get("/queues").json()["queues"]) == ["later", "q"]


def test_clone_leaves_the_original_alone(fleet: Fleet) -> None:
    _up(fleet)
    original = _create(fleet, name="orig")
    done = _run(fleet, _argv(original[:8], sys.executable, "-c", "print('cloned run')", clone=True))
    assert done.returncode == 0, done.stderr
    assert f"(clone of {original})" in done.stderr
    source = fleet.task(original)
    assert source["status"] == "created" and source["attempt"] == 0 and source["worker"] is None
    with fleet.api() as api:
        tasks = api.get("/tasks").json()["tasks"]
    (clone,) = [t for t in tasks if t["parent"] == original]
    assert clone["status"] == "completed" and clone["worker"] == WORKER
    assert "cloned run" in fleet.ok("logs", clone["id"])


def test_abort_stops_the_command(fleet: Fleet) -> None:
    _up(fleet)
    task_id = _create(fleet)
    runner = _spawn(fleet, _argv(task_id, sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"))
    try:
        _running(fleet, task_id)
        # a second executor cannot start the running task
        again = _run(fleet, _argv(task_id, "true", worker="other:image"))
        assert again.returncode == 1 and f"task {task_id} is running on {WORKER}" in again.stderr
        assert "HTTP 409" in again.stderr
        fleet.ok("abort", task_id)
        _out, err = runner.communicate(timeout=30)  # the command sleeps 60 s: only the abort ends it this soon
    finally:
        _reap(runner)
    assert runner.returncode == 128 + signal.SIGTERM, err
    task = fleet.task(task_id)
    assert task["status"] == "stopped", task
    assert "up" in fleet.ok("logs", task_id)


def test_sigterm_to_the_runner_stops_the_task(fleet: Fleet) -> None:
    _up(fleet)
    task_id = _create(fleet)
    runner = _spawn(fleet, _argv(task_id, "sleep", "60"))
    try:
        _running(fleet, task_id)
        runner.send_signal(signal.SIGTERM)
        runner.communicate(timeout=10)
    finally:
        _reap(runner)
    assert runner.returncode == 128 + signal.SIGTERM
    task = fleet.task(task_id)
    assert task["status"] == "stopped" and "SIGTERM" in task["status_reason"]


def test_timeout_fails_the_task(fleet: Fleet) -> None:
    _up(fleet)
    task_id = _create(fleet, timeout=1)
    done = _run(fleet, _argv(task_id, "sleep", "60"))
    assert done.returncode == 128 + signal.SIGTERM
    task = fleet.task(task_id)
    assert task["status"] == "failed" and task["status_reason"] == "timeout"


def test_a_vanished_runner_loses_its_task(fleet: Fleet) -> None:
    _up(fleet, "fleet { remote_lease_seconds: 2 }")
    task_id = _create(fleet)
    runner = _spawn(fleet, _argv(task_id, "sleep", "60"))
    try:
        _running(fleet, task_id)
        fleet.wait_for(lambda: bool(psutil.Process(runner.pid).children()), 5, "the command")
        (command,) = psutil.Process(runner.pid).children()
        runner.kill()
        runner.communicate(timeout=5)
        os.killpg(command.pid, signal.SIGKILL)  # what the container's end would do
        fleet.wait_for(lambda: fleet.task(task_id)["status"] != "in_progress", 8, "the lease to run out")
    finally:
        _reap(runner)
    task = fleet.task(task_id)
    assert task["status"] == "failed"
    assert task["status_reason"] == f"remote executor {WORKER} lost: no word for 2s"
    with fleet.api() as api:  # a late word from the lost executor is refused
        late = api.post(f"/tasks/{task_id}/log", json={"attempt": 1, "text": "late\n"})
        assert late.status_code == 409 and late.json()["field"] == "attempt"


def test_bad_requests(fleet: Fleet) -> None:
    _up(fleet)
    task_id = _create(fleet)
    missing = _run(fleet, _argv(task_id, "true"), env={k: v for k, v in _env(fleet).items() if k != "FLEET_API_URL"})
    assert missing.returncode == 2 and "FLEET_API_URL" in missing.stderr
    assert _run(fleet, _argv(task_id, "true", worker="bad worker")).returncode == 2
    bad_task = _run(fleet, _argv("../workers", "true"))
    assert bad_task.returncode == 2 and "--task '../workers': expected a task id" in bad_task.stderr
    with fleet.api() as api:
        url = f"/tasks/{task_id}"
        for body, field in (
            ({"worker": "bad id!"}, "worker"),
            ({"worker": "w", "gpus": [-1]}, "gpus.0"),
            ({"worker": "w", "gpus": [0, 0]}, "gpus"),
            ({"worker": "w", "clone": "yes"}, "clone"),
            ({"worker": "w", "extra": 1}, "extra"),
        ):
            answer = api.post(f"{url}/start", json=body)
            assert answer.status_code == 422 and answer.json()["field"] == field, (body, answer.text)
        assert api.post("/tasks/0123456789abcdef/start", json={"worker": "w"}).status_code == 404
        # a worker id of this manager's own workers is not an executor's
        (worker,) = api.get("/workers").json()["workers"]
        taken = api.post(f"{url}/start", json={"worker": worker["id"]})
        assert taken.status_code == 409 and taken.json()["field"] == "worker"
        # not running: no log, no finish
        assert api.post(f"{url}/log", json={"attempt": 1, "text": ""}).status_code == 409
        assert api.post(f"{url}/finish", json={"attempt": 1, "exit_code": 0}).status_code == 409
        started = api.post(f"{url}/start", json={"worker": "w", "gpus": []}).json()
        assert started["attempt"] == 1 and started["timeout"] is None and started["stop_grace_seconds"] == 2
        assert started["task"]["status"] == "in_progress" and started["task"]["worker"] == "w"
        wrong = api.post(f"{url}/log", json={"attempt": 2, "text": "x"})
        assert wrong.status_code == 409 and wrong.json()["field"] == "attempt"
        big = api.post(f"{url}/log", json={"attempt": 1, "text": "x" * (1024 * 1024 + 1)})
        assert big.status_code == 422 and big.json()["field"] == "text"
        assert api.post(f"{url}/log", json={"attempt": 0}).json()["field"] == "attempt"
        assert api.post(f"{url}/log", json={"attempt": 1, "text": "partial"}).json() == {"abort": None}
        api.post(f"{url}/abort", json={"reason": "enough"}).raise_for_status()
        assert api.post(f"{url}/log", json={"attempt": 1}).json() == {"abort": "enough"}
        assert api.post(f"{url}/finish", json={"attempt": 1, "exit_code": "0"}).status_code == 422
        ended = api.post(f"{url}/finish", json={"attempt": 1, "exit_code": -15, "stopped": True}).json()
        assert ended["status"] == "stopped" and ended["status_reason"] == "enough" and ended["exit_code"] == -15
        assert api.post(f"{url}/finish", json={"attempt": 1, "exit_code": 0}).status_code == 409
    assert "partial" in fleet.ok("logs", task_id)


def test_the_runner_sends_the_token(fleet: Fleet) -> None:
    token = "tok-remote-5e1f"
    fleet.env["FLEET_API_TOKEN"] = token
    _up(fleet, f'fleet {{ api {{ token: "{token}" }} }}')
    task_id = _create(fleet)
    done = _run(
        fleet, _argv(task_id, sys.executable, "-c", "import os; print('tok', os.environ.get('FLEET_API_TOKEN'))")
    )
    assert done.returncode == 0, done.stderr
    assert "tok None" in done.stdout and token not in done.stdout + done.stderr
    without = {k: v for k, v in _env(fleet).items() if k != "FLEET_API_TOKEN"}
    refused = _run(fleet, _argv(task_id, "true"), env=without)
    assert refused.returncode == 1
    assert "missing or wrong API token" in refused.stderr and "HTTP 401" in refused.stderr


def test_leases_seed_and_sweep_after_a_restart(tmp_path: Path) -> None:
    """A new manager gives remotely run tasks a full lease; a worker's task is left alone."""
    store = open_store(Home(tmp_path / "home").ensure())
    try:
        executor = Worker("box:image", "box", WorkerMode.STATIC, [], [], False, WorkerState.BUSY, "", time.time())
        remote = store.start_task(
            store.create_task(TaskSpec(Script(["true"], "/")), None, "t").id, executor, [], "t", Runner.REMOTE
        )
        mine = dataclasses.replace(executor, id="host:w0", host="host", queues=["q"], state=WorkerState.IDLE)
        store.register_worker(mine, "t")
        local = store.start_task(
            store.create_task(TaskSpec(Script(["true"], "/")), None, "t").id, mine, [], "t", Runner.STATIC
        )
        leases = Leases(5)
        assert leases.seed(store, now=100.0) == [remote.id]
        assert leases.sweep(store, now=104.0) == []
        leases.renew(remote.id, 1, None, now=103.0)
        assert leases.sweep(store, now=107.0) == []
        assert leases.sweep(store, now=108.5) == [remote.id]
        ended = store.get_task(remote.id)
        assert (
            ended.status == TaskStatus.FAILED
            and ended.status_reason == "remote executor box:image lost: no word for 5s"
        )
        assert store.get_task(local.id).status == TaskStatus.IN_PROGRESS and leases.get(remote.id) is None
    finally:
        store.close()


def test_on_a_shared_store_a_manager_seeds_leases_only_for_the_remote_tasks_it_started(tmp_path: Path) -> None:
    """Many hosts: an executor posts to the manager it started from; another
    host's manager, restarted, must not lease (and then fail) that task."""
    store = open_store(Home(tmp_path / "home").ensure())
    try:
        executor = Worker("box:image", "box", WorkerMode.STATIC, [], [], False, WorkerState.BUSY, "", time.time())
        ids = {}
        for host in ("host0", "host1"):
            spec = TaskSpec(Script(["true"], "/"))
            ids[host] = store.start_task(
                store.create_task(spec, None, "t").id, executor, [], starter(host), Runner.REMOTE
            ).id
        assert sorted(Leases(5).seed(store, now=100.0)) == sorted(ids.values())  # one host: every one
        leases = Leases(5)
        assert leases.seed(store, now=100.0, host="host1") == [ids["host1"]]
        assert leases.sweep(store, now=200.0) == [ids["host1"]]
        assert store.get_task(ids["host0"]).status == TaskStatus.IN_PROGRESS  # host0's manager keeps it
    finally:
        store.close()


def test_gpus_come_from_the_nvidia_runtime_and_a_gpu_task_needs_them(fleet: Fleet) -> None:
    """In a container run with ``--gpus device=2,3`` the NVIDIA runtime sets
    ``NVIDIA_VISIBLE_DEVICES=2,3`` (the host's numbers): those are recorded.
    Without GPUs a GPU task is refused, with how to give them."""
    _up(fleet)
    task_id = _create(fleet, gpus=2)
    refused = _run(fleet, _argv(task_id, "true"), env=_env(fleet, NVIDIA_VISIBLE_DEVICES="all"))
    assert refused.returncode == 1 and "needs 2 GPU(s); 0 given" in refused.stderr
    assert "docker run --gpus device=0,1" in refused.stderr
    assert fleet.task(task_id)["status"] == "created"
    env = _env(fleet, NVIDIA_VISIBLE_DEVICES="2,3", CUDA_VISIBLE_DEVICES="0,1")
    done = _run(fleet, _argv(task_id, "true"), env=env)
    assert done.returncode == 0, done.stderr
    assert fleet.task(task_id)["gpus"] == [2, 3]
