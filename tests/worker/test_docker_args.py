"""Docker mode's pure rules (issue 5): image choice, container names, docker
arguments, the masked command line, the container spec and the launch decision.
No engine needed."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from fleet.core.config import parse_config_string
from fleet.core.home import Home
from fleet.core.models import DockerMode, Script, Task, Worker, WorkerMode, WorkerOptions, WorkerState
from fleet.core.secrets import mask_command, secret_values
from fleet.policy.upplan import UpRequest, plan_up
from fleet.worker.docker.args import (
    NAME_RE,
    ContainerSpec,
    DockerArgsError,
    choose_image,
    container_name,
    parse_docker_args,
)
from fleet.worker.docker.container import device_requests
from fleet.worker.docker.run import build_spec
from fleet.worker.launch import plan_launch
from fleet.worker.launch_outcome import LaunchKind
from tests.conftest import Fleet
from tests.factories import running_task


def make_task(tmp_path: Path, **fields: Any) -> Task:
    return running_task(Script(["python3", "x.py"], str(tmp_path)), **fields)


def worker(options: WorkerOptions | None = None) -> Worker:
    return Worker(
        "h:gpu0,1",
        "h",
        WorkerMode.STATIC,
        [0, 1],
        ["q"],
        False,
        WorkerState.BUSY,
        "",
        0.0,
        options=options or WorkerOptions(),
    )


# -- image -------------------------------------------------------------------------


def test_image_task_then_worker_then_default() -> None:
    task = DockerMode("task/img:1", ("--ipc=host",))
    assert choose_image(task, "worker/img", "default/img", ["-e", "D=1"]) == ("task/img:1", ["--ipc=host"])
    assert choose_image(None, "worker/img", "default/img", ["-e", "D=1"]) == ("worker/img", [])
    assert choose_image(None, "", "default/img", ["-e", "D=1"]) == ("default/img", ["-e", "D=1"])
    with pytest.raises(DockerArgsError, match="no image"):
        choose_image(None, "", "", [])


# -- names ---------------------------------------------------------------------------


def test_container_name_format_fields_and_invalid_characters() -> None:
    name = container_name("fleet-id-{task_id}-{rand_string:.8}", "ab" * 16, "h:gpu0,1", rand="q" * 32)
    assert name == f"fleet-id-{'ab' * 16}-qqqqqqqq"
    name = container_name("{worker_id}_{task_id}", "abcd", "box 1:gpu0,1")
    assert name == "box-1-gpu0-1_abcd" and NAME_RE.fullmatch(name)
    assert len(container_name("x-{rand_string}", "abcd", "w")) == 2 + 32


def test_container_name_refuses_bad_formats() -> None:
    with pytest.raises(DockerArgsError, match="allowed fields"):
        container_name("x-{user}", "abcd", "w")
    with pytest.raises(DockerArgsError, match="Docker refuses"):
        container_name("-{task_id}", "abcd", "w")
    with pytest.raises(DockerArgsError, match="Docker refuses"):
        container_name("{rand_string:.0}", "abcd", "w")


# -- docker arguments ------------------------------------------------------------------


def test_supported_docker_arguments_become_sdk_kwargs() -> None:
    opts = parse_docker_args(
        [
            *["-v", "/data:/mnt/data:ro", "--volume=/a:/b", "-e", "A=1", "-eB=2", "--env", "C", "--ipc=host"],
            *["--shm-size", "1g", "--network=none", '-e "NAME=in one string"'],
        ],
        environ={"C": "from-env"},
    )
    assert opts.volumes == {"/data": {"bind": "/mnt/data", "mode": "ro"}, "/a": {"bind": "/b", "mode": "rw"}}
    assert opts.environment == {"A": "1", "B": "2", "C": "from-env", "NAME": "in one string"}
    assert (opts.ipc_mode, opts.shm_size, opts.network_mode) == ("host", "1g", "none")
    assert parse_docker_args(["--net", "host"]).network_mode == "host"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cidfile", "/tmp/x"], "'--cidfile' cannot be expressed through the docker SDK"),
        (["--pull=always"], "'--pull' cannot be expressed .*docker_force_pull"),
        (["--no-such-flag"], "'--no-such-flag' is not a docker run option"),
        (["-v", "relative"], "expected HOST:CONTAINER"),
        (["-v", "/a:/b:zz"], "mode must be ro or rw"),
        (["--ipc"], "needs a value"),
    ],
)
def test_unsupported_or_bad_docker_arguments_are_refused(args: list[str], message: str) -> None:
    with pytest.raises(DockerArgsError, match=message):
        parse_docker_args(args)


# -- masking -------------------------------------------------------------------------


def test_shown_command_masks_secrets() -> None:
    argv = ["docker", "run", "-e", "CLEARML_API_SECRET_KEY=k1", "-e", "CLEARML_AGENT_GIT_PASS=k2"]
    argv += ["-e", "AWS_SECRET_ACCESS_KEY=k3", "-e", "AZURE_STORAGE_KEY=k4", "-e", "FLEET_API_TOKEN=k5"]
    argv += ["-e", "MINE=k6", "-e", "PLAIN=visible", "-e", "URL=https://u:pa55@host/x", "img"]
    argv += ["python", "--password-is", "gitpassword1"]
    argv += ["--env=AWS_SECRET_ACCESS_KEY=k7", "-eAZURE_STORAGE_KEY=k8", "--env", "MINE=k9", "-eOTHER=shown"]
    shown = mask_command(argv, extra_keys=["MINE"], secret_values=["gitpassword1"])
    assert not any(f"k{n}" in shown for n in range(1, 10)), shown
    assert "--env=AWS_SECRET_ACCESS_KEY=********" in shown and "-eAZURE_STORAGE_KEY=********" in shown
    assert "-eOTHER=shown" in shown
    for key in ("CLEARML_API_SECRET_KEY", "CLEARML_AGENT_GIT_PASS", "AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_KEY"):
        assert f"{key}=********" in shown
    assert "FLEET_API_TOKEN=********" in shown and "MINE=********" in shown
    assert "PLAIN=visible" in shown and "u:********@host" in shown and "pa55" not in shown
    assert "gitpassword1" not in shown
    assert secret_values({"AWS_SECRET_ACCESS_KEY": "v1", "X": "v2", "MINE": "v3"}, ["MINE"], ["gp"]) == [
        "v1",
        "v3",
        "gp",
    ]


# -- the container spec ------------------------------------------------------------------


def test_spec_for_a_two_gpu_task(tmp_path: Path) -> None:
    config = parse_config_string(
        'agent { extra_docker_arguments: ["--network=none"], docker_internal_mounts { pip_cache: "/pip" } }',
        tmp_path / "fleet.conf",
    )
    home = Home(tmp_path / "home")
    task = make_task(tmp_path, gpus=[2, 3], env={"AWS_SECRET_ACCESS_KEY": "real"}, docker=DockerMode("img:1"))
    spec = build_spec(task, "h:gpu2,3", "", config, home, tmp_path, [tmp_path], tmp_path / "run", rand="r" * 32)
    assert spec.image == "img:1" and spec.network_mode == "none"
    assert spec.environment["NVIDIA_VISIBLE_DEVICES"] == "2,3" == spec.environment["CUDA_VISIBLE_DEVICES"]
    assert spec.environment["AWS_SECRET_ACCESS_KEY"] == "real"  # the container gets the real value
    assert spec.labels["fleet.task"] == task.id and spec.labels["fleet.worker"] == "h:gpu2,3"
    assert spec.volumes[str(tmp_path)] == {"bind": str(tmp_path), "mode": "rw"}
    assert {"bind": "/pip", "mode": "rw"} in spec.volumes.values()
    assert spec.command == ["sh", "/fleet/run/entry.sh", "run", "python3", "x.py"]
    (request,) = device_requests(spec.gpus)
    assert request["DeviceIDs"] == ["2", "3"] and request["Capabilities"] == [["gpu"]]
    assert device_requests([]) == []
    shown = spec.shown(secret_values=["real"])
    assert "AWS_SECRET_ACCESS_KEY=********" in shown and "--gpus device=2,3" in shown and "real" not in shown
    kwargs = spec.kwargs()
    assert kwargs["environment"]["AWS_SECRET_ACCESS_KEY"] == "real" and kwargs["init"] is True


def test_plain_spec_kwargs_leave_unset_options_out() -> None:
    spec = ContainerSpec("i", ["true"], "n", {}, {}, {}, "/")
    assert "ipc_mode" not in spec.kwargs() and "network_mode" not in spec.kwargs()


# -- the launch decision and the worker option ----------------------------------------------


def test_docker_worker_launches_the_runner(tmp_path: Path) -> None:
    home = Home(tmp_path / "home")
    config = parse_config_string("", tmp_path / "fleet.conf")
    launch = plan_launch(
        make_task(tmp_path), worker(WorkerOptions(docker=DockerMode("w/img"))), {}, home=home, config=config
    )
    assert launch.kind == LaunchKind.DOCKER
    assert launch.argv[1:3] == ["-m", "fleet.worker.docker.run"]
    assert launch.argv[launch.argv.index("--image") + 1] == "w/img"
    assert launch.argv[launch.argv.index("--worker") + 1] == "h:gpu0,1"
    plain = plan_launch(make_task(tmp_path, docker=DockerMode("x")), worker(), {}, home=home, config=config)
    assert plain.argv == ["python3", "x.py"]  # a task's image matters only on a docker-mode worker


def test_up_docker_goes_into_the_worker_options() -> None:
    from fleet.core.nvml import Nvml

    plan = plan_up(UpRequest(queues=["q"], cpu_only=True, docker="img"), [], "h", Nvml())
    assert plan.new[0].options == WorkerOptions(docker=DockerMode("img"))
    plan = plan_up(UpRequest(queues=["q"], cpu_only=True, docker=""), [], "h", Nvml())
    assert plan.new[0].options == WorkerOptions(docker=DockerMode(""))
    assert plan_up(UpRequest(queues=["q"], cpu_only=True), [], "h", Nvml()).new[0].options == WorkerOptions()


def test_submit_refuses_unsupported_docker_args_before_anything(fleet: Fleet) -> None:
    result = fleet.cli("submit", "--queue", "q", "--docker", "img", "--docker-args", "--sig-proxy", "--", "true")
    assert result.returncode == 2, result.stderr
    assert "'--sig-proxy' cannot be expressed through the docker SDK" in result.stderr
    result = fleet.cli("submit", "--queue", "q", "--docker-args", "--ipc=host", "--", "true")
    assert result.returncode == 2 and "only with --docker IMAGE" in result.stderr


def test_a_worker_without_an_engine_says_so_and_pulls_nothing(fleet: Fleet) -> None:
    """Docker mode with an engine that cannot be reached (DOCKER_HOST points at a
    socket nobody serves): the worker says why in its state and takes no task."""
    fleet.env["DOCKER_HOST"] = f"unix://{fleet.root}/no-engine.sock"
    fleet.up("--cpu-only", "--queue", "dq", "--create-queue", "--docker", "some-image:1")
    task_id = fleet.submit("dq", "true")

    def says_so() -> bool:
        with fleet.api() as api:
            worker = api.get("/workers").json()["workers"][0]
        return bool(worker["state_reason"].startswith("not pulling: docker engine unreachable"))

    fleet.wait_for(says_so, timeout=30, what="the worker to report the missing engine")
    assert "docker engine unreachable" in fleet.ok("status")
    assert fleet.task(task_id)["status"] == "queued"


def test_build_settings_reach_the_build_quoted_and_outside_the_environment(tmp_path: Path) -> None:
    from fleet.worker.docker.scripts import write_build_env
    from fleet.worker.docker.venv import builder_spec

    index = "https://bob:pa'ss w@pypi.example/simple"
    config = parse_config_string(
        f'agent {{ package_manager {{ type: poetry, pip_version: "<24", force_upgrade: true,'
        f' extra_index_url: ["{index}", "https://two/simple"] }} }}',
        tmp_path / "fleet.conf",
    )
    path = tmp_path / "build.env"
    write_build_env(path, config)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    script = (
        '. "$1"; printf "%s|%s|%s|%s" "$FLEET_MANAGER" "$FLEET_PIP_VERSION" "$FLEET_UPGRADE" "$PIP_EXTRA_INDEX_URL"'
    )
    read = subprocess.run(["sh", "-c", script, "sh", str(path)], capture_output=True, text=True, check=True).stdout
    assert read == f"pip|pip<24|--upgrade|{index} https://two/simple"  # poetry cannot run in a bare image: pip
    task = make_task(tmp_path, docker=DockerMode("img:1"))
    spec = build_spec(task, "h:cpu", "", config, Home(tmp_path / "home"), tmp_path, [tmp_path], tmp_path / "run")
    env_spec = builder_spec(spec, tmp_path / "venv", path)
    assert "pa'ss" not in repr(env_spec.environment)
    assert env_spec.volumes[str(path)] == {"bind": "/fleet/build.env", "mode": "ro"}
    assert env_spec.command == ["sh", "/fleet/run/entry.sh", "build"] and env_spec.gpus == []
