"""Docker mode on a real engine (issue 5).

The test image is built here (:mod:`tests.dockerimage`).  The engine runs with
``--bridge=none``, so containers use ``--network=none``
(``agent.extra_docker_arguments``).  Every test skips, with the reason, when
no engine answers (tests/run.sh starts one in CI).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.core.home import Home
from tests.conftest import CONFIG, Fleet
from tests.dockerimage import IMAGE, extra_image, make_wheel, python_image
from tests.store.test_store_faults import small_disk  # noqa: F401 - a small tmpfs for the venvs cache

docker = pytest.importorskip("docker")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    yield from python_image()


def _docker_config(fleet: Fleet, extra: str = "") -> None:
    agent = f"""
agent {{
  extra_docker_arguments: ["--network=none"]
  docker_container_name_format: "fleet-{{worker_id}}-{{task_id}}-{{rand_string:.6}}"
  hide_docker_command_env_vars {{ extra_keys: ["MY_TOKEN_LIKE"] }}
  {extra}
}}
"""
    (fleet.root / "fleet.conf").write_text(CONFIG + agent)


def _ours(client: Any, task_id: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": f"fleet.task={task_id}"}))


def _log(fleet: Fleet, task_id: str) -> str:
    return fleet.ok("logs", task_id, "--no-timestamps")


def _wait_end(fleet: Fleet, task_id: str, timeout: float = 120) -> dict[str, Any]:
    fleet.wait_for(
        lambda: fleet.task(task_id)["status"] in ("completed", "failed", "stopped"), timeout, f"task {task_id}"
    )
    return fleet.task(task_id)


def test_cpu_task_in_a_local_image_sees_its_code_env_and_secrets_are_masked(
    fleet: Fleet, client: Any, tmp_path: Path
) -> None:
    _docker_config(fleet, 'extra_docker_shell_script: ["echo extra-script-ran"]')
    # A container a crashed runner left behind: labelled for this host, its runner gone, its task unknown.
    labels = {"fleet.task": "0" * 32, "fleet.worker": "x", "fleet.host": socket.gethostname()}
    orphan = client.containers.create(
        IMAGE, ["sh", "-c", "sleep 60"], labels={**labels, "fleet.runner_pid": "999999999"}, network_mode="none"
    )
    code = tmp_path / "proj"
    code.mkdir()
    (code / "main.py").write_text(
        textwrap.dedent(
            """\
            import os, sys
            print("python", sys.version_info[:2], "in", os.getcwd())
            print("image var", os.environ.get("FLEET_TEST_IMAGE"))
            print("secret seen", os.environ["AWS_SECRET_ACCESS_KEY"])
            print("task", os.environ["FLEET_TASK_ID"], "gpus", repr(os.environ["CUDA_VISIBLE_DEVICES"]))
            print("device order", os.environ["CUDA_DEVICE_ORDER"])
            print("data", open("data.txt").read().strip())
            sys.exit(3)
            """
        )
    )
    (code / "data.txt").write_text("mounted-code\n")
    (code / "setup.sh").write_text("echo setup-ran-in $(pwd)\n")
    fleet.up("--cpu-only", "--queue", "dq", "--create-queue", "--docker", IMAGE)
    task_id = fleet.submit(
        "dq",
        "python3",
        "main.py",
        opts=(
            "--env",
            "AWS_SECRET_ACCESS_KEY=s3cr3t-value",
            "--env",
            "MY_TOKEN_LIKE=hidden-too",
            "--env",
            "URL=https://bob:pw1234@example.com/x",
            "--setup-script",
            str(code / "setup.sh"),
        ),
        cwd=code,
    )
    task = _wait_end(fleet, task_id)
    log = _log(fleet, task_id)
    assert task["status"] == "failed", log
    assert task["exit_code"] == 3, log
    assert "extra-script-ran" in log and f"setup-ran-in {code}" in log
    assert "image var 1" in log and "data mounted-code" in log
    assert f"task {task_id} gpus ''" in log
    assert "device order PCI_BUS_ID" in log  # issue 17: every task, docker ones too
    assert "secret seen s3cr3t-value" in log  # the container got the real value
    shown = next(line for line in log.splitlines() if "docker run" in line)
    assert "AWS_SECRET_ACCESS_KEY=********" in shown and "MY_TOKEN_LIKE=********" in shown
    assert "bob:********@example.com" in shown and "pw1234" not in shown and "hidden-too" not in shown
    assert "--network=none" in shown and re.search(r"--name fleet-[\w.-]+-cpu-" + task_id, shown), shown
    assert f"--label fleet.task={task_id}" in shown
    with fleet.api() as api:
        api_log = api.get(f"/tasks/{task_id}/log").text
    assert "AWS_SECRET_ACCESS_KEY=********" in api_log and "pw1234" not in api_log
    assert _ours(client, task_id) == []  # removed after the run
    with pytest.raises(docker.errors.NotFound):
        orphan.reload()  # swept when the runner started


def test_orphan_is_removed_and_live_container_kept(client: Any, tmp_path: Path) -> None:
    """Only this home's containers are judged against its store; another home's
    are left to it, even while their tasks are unknown here."""
    from fleet.store import open_store
    from fleet.worker.docker.cleanup import remove_orphans

    host, home, other = f"test-{os.getpid()}", str(tmp_path / "home"), str(tmp_path / "other")
    alive, dead = str(os.getpid()), "999999999"

    def make(name: str, **labels: str) -> Any:
        labels = {"fleet.host": host, "fleet.task": "ab" * 16, **labels}
        return client.containers.create(IMAGE, ["sh", "-c", "sleep 60"], labels=labels, name=f"{name}-{os.getpid()}")

    made = [
        make("runner-dead", **{"fleet.runner_pid": dead, "fleet.core.home": home}),
        make("task-unknown", **{"fleet.runner_pid": alive, "fleet.core.home": home}),
        make("old-runner-dead", **{"fleet.runner_pid": dead}),
        make("old-runner-alive", **{"fleet.runner_pid": alive}),
        make("other-home", **{"fleet.runner_pid": dead, "fleet.core.home": other}),
    ]
    store = open_store(Home(Path(home)).ensure())
    try:
        removed = remove_orphans(client, host, home, store)
        assert sorted(removed) == sorted(
            f"{n}-{os.getpid()}" for n in ("runner-dead", "task-unknown", "old-runner-dead")
        )
        left = client.containers.list(all=True, filters={"label": f"fleet.host={host}"})
        assert sorted(c.name for c in left) == sorted(f"{n}-{os.getpid()}" for n in ("old-runner-alive", "other-home"))
    finally:
        store.close()
        for c in made:
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass


def _spec(name: str, command: list[str], gpus: list[str] | None = None) -> Any:
    from fleet.worker.docker.args import ContainerSpec

    return ContainerSpec(
        image=IMAGE,
        command=command,
        name=name,
        labels={"fleet.task": name, "fleet.host": f"unit-{os.getpid()}"},
        environment={"A": "1"},
        volumes={},
        working_dir="/root",
        gpus=gpus or [],
        network_mode="none",
    )


def test_exit_code_and_lines_stream(client: Any) -> None:
    from fleet.worker.docker.container import run_container

    lines: list[str] = []
    spec = _spec(f"fleet-unit-exit-{os.getpid()}", ["sh", "-c", "echo one; echo two; printf tail; exit 7"])
    assert run_container(client, spec, write=lines.append) == 7
    assert lines == ["one", "two", "tail"]
    assert _ours(client, spec.name) == []


def test_stop_request_stops_and_removes_the_container(client: Any) -> None:
    from fleet.worker.docker.container import Stopper, run_container

    stopper = Stopper(1.0)
    spec = _spec(
        f"fleet-unit-stop-{os.getpid()}", ["python3", "-c", "import time; print('started', flush=True); time.sleep(60)"]
    )
    lines: list[str] = []

    def write(text: str) -> None:
        lines.append(text)
        if text == "started":
            threading.Timer(0.2, stopper, (signal.SIGTERM, None)).start()

    started = time.monotonic()
    code = run_container(client, spec, write=write, stopper=stopper)
    assert time.monotonic() - started < 30
    assert code in (137, 143)
    assert _ours(client, spec.name) == []


def test_gpu_task_without_nvidia_runtime_fails_clearly(client: Any) -> None:
    from fleet.worker.docker.container import DockerRunError, run_container

    if "nvidia" in json.dumps(client.info().get("Runtimes", {})):
        pytest.skip("this engine has the NVIDIA runtime")
    spec = _spec(f"fleet-unit-gpu-{os.getpid()}", ["sh", "-c", "true"], gpus=["0", "1"])
    with pytest.raises(DockerRunError, match="needs GPUs \\[0,1\\] but this docker engine has no NVIDIA runtime"):
        run_container(client, spec, write=print)
    assert _ours(client, spec.name) == []


def test_force_pull_is_honoured(client: Any) -> None:
    from fleet.worker.docker.container import DockerRunError, run_container

    spec = _spec(f"fleet-unit-pull-{os.getpid()}", ["true"])
    with pytest.raises(DockerRunError, match="docker_force_pull is set and the pull failed"):
        run_container(client, spec, force_pull=True, write=print)


def test_abort_stops_and_removes_the_container(fleet: Fleet, client: Any, tmp_path: Path) -> None:
    _docker_config(fleet)
    fleet.up("--cpu-only", "--queue", "dq", "--create-queue", "--docker", IMAGE)
    script = "import time; print('run' + 'ning', flush=True); time.sleep(120)"  # the shown command lacks the word
    task_id = fleet.submit("dq", "python3", "-c", script, cwd=tmp_path)
    fleet.wait_for(lambda: "running" in _log(fleet, task_id).splitlines(), 120, "the task to start in its container")
    assert len(_ours(client, task_id)) == 1
    fleet.ok("abort", task_id)
    task = _wait_end(fleet, task_id, 60)
    assert task["status"] == "stopped", _log(fleet, task_id)
    fleet.wait_for(lambda: _ours(client, task_id) == [], 30, "the container to be removed")
    assert "stop requested: stopping the container" in _log(fleet, task_id)


def test_execute_docker_runs_the_task_in_the_default_image(fleet: Fleet, client: Any, tmp_path: Path) -> None:
    _docker_config(fleet, f'default_docker {{ image: "{IMAGE}", arguments: ["-e", "FROM_DEFAULT=yes"] }}')
    fleet.up("--cpu-only", "--queue", "other", "--create-queue")
    script = "import os; print('default', os.environ.get('FROM_DEFAULT'), os.environ.get('FLEET_TEST_IMAGE'))"
    task_id = fleet.submit("other", "python3", "-c", script, cwd=tmp_path)
    _wait_end(fleet, task_id)  # first run: on the plain worker (no docker mode), the host's python
    result = fleet.cli("execute", "--id", task_id, "--clone", "--docker")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "default yes 1" in result.stdout + result.stderr


def test_git_task_sees_its_checkout_and_diff_in_the_tasks_image(fleet: Fleet, client: Any, tmp_path: Path) -> None:
    from tests.gitrepo import GIT_ENV, make_repo

    _docker_config(fleet)
    fleet.env.update(GIT_ENV)
    repo = make_repo(tmp_path / "src")
    repo.write("pkg/__init__.py", "VALUE = 'modified, not committed'\n")
    repo.write("pkg/extra.py", "WHERE = 'untracked module'\n")
    repo.write("train.py", "import os, pkg, pkg.extra\nprint('train', pkg.VALUE, '|', pkg.extra.WHERE, os.getcwd())\n")
    fleet.up("--cpu-only", "--queue", "dq", "--create-queue", "--docker")  # no image: the task's is used
    task_id = fleet.submit("dq", "python3", "train.py", opts=("--docker", IMAGE), cwd=repo.work)
    task = _wait_end(fleet, task_id)
    log = _log(fleet, task_id)
    assert task["status"] == "completed", log
    assert task["docker"] == {"image": IMAGE, "args": []}
    with fleet.api() as api:
        (shown,) = api.get("/workers").raise_for_status().json()["workers"]
    assert shown["docker"] == {"image": ""}
    assert f"train modified, not committed | untracked module {fleet.home / 'work' / task_id}" in log
    assert _ours(client, task_id) == []


def test_a_docker_worker_sweeps_orphans_when_it_starts(fleet: Fleet, client: Any) -> None:
    _docker_config(fleet)
    labels = {
        "fleet.task": "1" * 32,
        "fleet.worker": "x",
        "fleet.host": socket.gethostname(),
        "fleet.core.home": str(fleet.home),
    }
    orphan = client.containers.create(
        IMAGE, ["sh", "-c", "sleep 60"], labels={**labels, "fleet.runner_pid": "999999999"}, network_mode="none"
    )

    def gone() -> bool:
        try:
            orphan.reload()
        except docker.errors.NotFound:
            return True
        return False

    fleet.up("--cpu-only", "--queue", "dq", "--create-queue", "--docker", IMAGE)
    fleet.wait_for(gone, 30, "the orphan container to be removed at worker start")


def test_requirements_are_installed_in_the_tasks_image_and_cached(fleet: Fleet, client: Any, tmp_path: Path) -> None:
    from tests.gitrepo import GIT_ENV, make_repo

    _docker_config(fleet)
    fleet.env.update(GIT_ENV)
    repo = make_repo(tmp_path / "src")
    make_wheel(repo.work / "wheels", "tinydep", "1.0", "WHO = 'tinydep from a wheel'\n")
    repo.write("requirements.txt", "./wheels/tinydep-1.0-py3-none-any.whl\n")
    repo.write("train.py", "import sys, tinydep\nprint('dep', tinydep.WHO, 'in', sys.prefix)\n")
    repo.commit("a requirement")
    fleet.up("--cpu-only", "--queue", "dq", "--create-queue", "--docker", IMAGE)
    # A local path: an environment for this task only, removed when it ends.
    local = fleet.submit("dq", "python3", "train.py", cwd=repo.work)
    task = _wait_end(fleet, local)
    log = _log(fleet, local)
    assert task["status"] == "completed", log
    one_off = fleet.home / "venvs-builds" / local
    assert f"dep tinydep from a wheel in {one_off}" in log
    assert "building an environment for this task only" in log
    assert not one_off.exists()
    # A cacheable requirement (satisfied offline by the pip the venv gets): built once, then reused.
    script = "import sys, pip; print('pip', pip.__version__, 'in', sys.prefix)"
    first, second = (
        fleet.submit("dq", "python3", "-c", script, opts=("--packages", "pip"), cwd=tmp_path) for _ in range(2)
    )
    one, two = _wait_end(fleet, first), _wait_end(fleet, second)
    log_one, log_two = _log(fleet, first), _log(fleet, second)
    assert one["status"] == "completed" and two["status"] == "completed", log_one + log_two
    assert "building the environment (1 requirement(s))" in log_one and "reusing cached environment" in log_two
    assert "building the environment" not in log_two
    prefix = re.search(r"^pip \S+ in (\S+)$", log_one, re.M)
    assert prefix is not None and prefix.group(1).startswith(str(fleet.home / "venvs-cache")), log_one
    assert f"in {prefix.group(1)}" in log_two  # the same environment, mounted again
    assert (one["env_cached"], two["env_cached"]) == (False, True)
    # no build container of these tasks is left (the engine is shared with other tests: look at ours only)
    ours = [
        c
        for t in (local, first, second)
        for c in client.containers.list(all=True, filters={"label": f"fleet.task={t}"})
    ]
    assert [c.name for c in ours] == []


def test_no_disk_space_for_the_environment_puts_a_docker_task_back_and_backs_off(
    fleet: Fleet,
    client: Any,
    small_disk: Path,  # noqa: F811 - the fixture, imported
    tmp_path: Path,
) -> None:
    """The venvs cache on a 20 MB tmpfs, below ``free_space_threshold_gb``: a docker
    task needing an environment gets none built, goes back to the head of its queue
    with the reason, and its worker pulls nothing for a while (one attempt, not a
    claim loop), exactly as for a prepared task (tests/manager/test_faults.py).  The docker
    launcher reports it through its launch record, never an exit code or log text."""
    _docker_config(fleet, f'venvs_cache {{ path: "{small_disk}", free_space_threshold_gb: 0.05 }}')
    fleet.up("--cpu-only", "--queue", "dq", "--create-queue", "--docker", IMAGE)
    task_id = fleet.submit("dq", "python3", "-c", "print(1)", opts=("--packages", "pip"), cwd=tmp_path)

    def requeued() -> bool:
        task = fleet.task(task_id)
        return bool(task["status"] == "queued" and task["attempt"] >= 1)

    fleet.wait_for(requeued, timeout=120, what="requeued for lack of space")
    task = fleet.task(task_id)
    assert "disk space" in task["status_reason"] and "free_space_threshold_gb" in task["status_reason"], task
    with fleet.api() as api:

        def backing_off() -> bool:
            worker = api.get("/workers").json()["workers"][0]
            return bool(worker["state_reason"] == "not pulling: " + task["status_reason"].split(": ", 1)[1])

        fleet.wait_for(backing_off, timeout=10, what="the worker to say why it does not pull")
    time.sleep(2)  # backing off: the task is not claimed again meanwhile
    assert fleet.task(task_id)["attempt"] == 1
    assert not any(small_disk.glob("*.ready"))  # nothing was built
    assert [c for c in client.containers.list(all=True) if c.name.endswith("-env")] == []


def _uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not os.path.exists(found):
        pytest.skip("no uv binary here to put in the test image")
    return found


def test_the_images_own_packages_satisfy_requirements(fleet: Fleet, client: Any, tmp_path: Path) -> None:
    """The venv sees the image's packages (as in ClearML Agent's docker mode): a
    requirement the image satisfies is not installed again.  With no network
    (``--network=none``), pip could not have fetched it."""
    image = extra_image(client, _uv())
    _docker_config(fleet, "package_manager { type: pip }")
    fleet.up("--cpu-only", "--queue", "dq", "--create-queue", "--docker", image)
    script = "import sys, tinysys; print('sys', tinysys.WHO, 'in', sys.prefix)"
    task_id = fleet.submit("dq", "python3", "-c", script, opts=("--packages", "tinysys==1.0"), cwd=tmp_path)
    task = _wait_end(fleet, task_id)
    log = _log(fleet, task_id)
    assert task["status"] == "completed", log
    assert "Requirement already satisfied: tinysys==1.0 in /usr/local/lib/python3.11/dist-packages" in log
    assert re.search(r"^sys tinysys from the image in \S+/venvs-cache/\w+$", log, re.M), log


def test_uv_in_the_image_builds_the_environment(fleet: Fleet, client: Any, tmp_path: Path) -> None:
    image = extra_image(client, _uv())
    _docker_config(fleet, "package_manager { type: uv }")
    wheel = make_wheel(tmp_path / "wheels", "tinydep", "1.0", "WHO = 'tinydep from a wheel'\n")
    fleet.up("--cpu-only", "--queue", "dq", "--create-queue", "--docker", image)
    script = "import tinydep; print('dep', tinydep.WHO)"
    task_id = fleet.submit("dq", "python3", "-c", script, opts=("--packages", str(wheel)), cwd=tmp_path)
    task = _wait_end(fleet, task_id)
    log = _log(fleet, task_id)
    assert task["status"] == "completed", log
    assert "with uv and /usr/bin/python3" in log and "dep tinydep from a wheel" in log
    # An image without uv falls back to pip, saying so.
    plain = fleet.submit(
        "dq", "python3", "-c", script, opts=("--packages", str(wheel), "--docker", IMAGE), cwd=tmp_path
    )
    assert _wait_end(fleet, plain)["status"] == "completed", _log(fleet, plain)
    assert "the image has no uv: using pip" in _log(fleet, plain)
