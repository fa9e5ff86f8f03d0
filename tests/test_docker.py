"""Docker mode on a real engine (issue 5).

No registry can be reached, so the test image is built here: ``docker import``
of a small root filesystem assembled from this host (its ``python3.11``, the
shared libraries ``ldd`` lists, the standard library and ``dash`` as
``/bin/sh``), then ``docker build FROM`` it.  The engine runs with
``--bridge=none``, so containers use ``--network=none``
(``agent.extra_docker_arguments``).  Every test skips, with the reason, when
no engine answers (tests/run.sh starts one in CI).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONFIG, Fleet

docker = pytest.importorskip("docker")

BASE = "fleet-test-base:1"
IMAGE = "fleet-test-python:1"
PYTHON = "/usr/bin/python3.11"


def _client() -> Any:
    client = None
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:  # any failure to reach the engine means: skip
        if client is not None:
            client.close()
        pytest.skip(f"no docker engine reachable ({exc}); tests/run.sh starts dockerd")
    return client


def _libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    return re.findall(r"(/\S+\.so[.\d]*)", out)


def _rootfs_tar() -> bytes:
    """A root filesystem with python3.11, its libraries, its stdlib and /bin/sh."""
    buf = io.BytesIO()
    skip = {"test", "idlelib", "tkinter", "turtledemo", "site-packages", "dist-packages", "__pycache__"}

    def no_tests(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if any(part in skip for part in Path(info.name).parts) else info

    shell = shutil.which("dash") or "/bin/sh"
    with tarfile.open(fileobj=buf, mode="w") as tar:
        files = {PYTHON: PYTHON, shell: "/bin/sh"}
        for lib in {*_libraries(PYTHON), *_libraries(shell)}:
            files[lib] = lib
        for src, dest in files.items():
            tar.add(os.path.realpath(src), arcname=dest.lstrip("/"))
        tar.add("/usr/lib/python3.11", arcname="usr/lib/python3.11", filter=no_tests)
        for name, target in (("usr/bin/python3", "python3.11"), ("usr/bin/sh", "../../bin/sh")):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            tar.addfile(link)
        for folder in ("tmp", "root", "etc"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if folder == "tmp" else 0o755
            tar.addfile(info)
    return buf.getvalue()


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    client = _client()
    if not os.path.exists(PYTHON):
        pytest.skip(f"{PYTHON} is needed to assemble the test image")
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        try:
            client.images.get(BASE)
        except docker.errors.ImageNotFound:
            repo, tag = BASE.split(":")
            client.api.import_image_from_data(_rootfs_tar(), repository=repo, tag=tag)
        dockerfile = f"FROM {BASE}\nENV FLEET_TEST_IMAGE=1\nWORKDIR /root\n"
        client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=IMAGE, network_mode="none", rm=True)
    yield client
    client.close()


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


def test_orphan_is_removed_and_live_container_kept(client: Any) -> None:
    from fleet.worker.docker.cleanup import remove_orphans

    host = f"test-{os.getpid()}"
    dead = client.containers.create(
        IMAGE, ["sh", "-c", "sleep 60"], labels={"fleet.host": host, "fleet.runner_pid": "999999999"}
    )
    live = client.containers.create(
        IMAGE,
        ["sh", "-c", "sleep 60"],
        labels={"fleet.host": host, "fleet.runner_pid": str(os.getpid()), "fleet.task": "ab" * 16},
    )
    try:
        removed = remove_orphans(client, host, store=None)
        assert removed == [dead.name]
        assert [c.name for c in client.containers.list(all=True, filters={"label": f"fleet.host={host}"})] == [
            live.name
        ]
    finally:
        for c in (dead, live):
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass


def _spec(name: str, command: list[str], gpus: list[int] | None = None) -> Any:
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
    from fleet.worker.docker.run import run_container

    lines: list[str] = []
    spec = _spec(f"fleet-unit-exit-{os.getpid()}", ["sh", "-c", "echo one; echo two; printf tail; exit 7"])
    assert run_container(client, spec, write=lines.append) == 7
    assert lines == ["one", "two", "tail"]
    assert _ours(client, spec.name) == []


def test_stop_request_stops_and_removes_the_container(client: Any) -> None:
    from fleet.worker.docker.run import Stopper, run_container

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
    from fleet.worker.docker.run import DockerRunError, run_container

    if "nvidia" in json.dumps(client.info().get("Runtimes", {})):
        pytest.skip("this engine has the NVIDIA runtime")
    spec = _spec(f"fleet-unit-gpu-{os.getpid()}", ["sh", "-c", "true"], gpus=[0, 1])
    with pytest.raises(DockerRunError, match="needs GPUs \\[0,1\\] but this docker engine has no NVIDIA runtime"):
        run_container(client, spec, write=print)
    assert _ours(client, spec.name) == []


def test_force_pull_is_honoured(client: Any) -> None:
    from fleet.worker.docker.run import DockerRunError, run_container

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
    labels = {"fleet.task": "1" * 32, "fleet.worker": "x", "fleet.host": socket.gethostname()}
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
