"""Every ``docker run`` option the docker SDK can express passes through (issue 15).

A table: each row is docker arguments as a task, a worker or the agent config
gives them, and what ``docker container inspect`` must show on the real engine
once fleet's translation created the container.  Some rows also run the
container and look from inside.  Skips, with the reason, when no engine answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.worker.docker.args import ContainerSpec, DockerArgsError, parse_docker_args
from tests.dockerimage import IMAGE, python_image

docker = pytest.importorskip("docker")

Check = Callable[[dict[str, Any]], Any]


def host(attrs: dict[str, Any]) -> dict[str, Any]:
    return dict(attrs["HostConfig"])


def cfg(attrs: dict[str, Any]) -> dict[str, Any]:
    return dict(attrs["Config"])


# (docker arguments, what inspect shows)
TABLE: list[tuple[list[str], Check]] = [
    (["--privileged"], lambda a: host(a)["Privileged"] is True),
    (
        ["--device", "/dev/null:/dev/fleet-null:rw"],
        lambda a: host(a)["Devices"][0]["PathInContainer"] == "/dev/fleet-null",
    ),
    (["--user", "1234:1234"], lambda a: cfg(a)["User"] == "1234:1234"),
    (["-u", "nobody"], lambda a: cfg(a)["User"] == "nobody"),
    (
        ["--cap-add", "SYS_PTRACE", "--cap-add=NET_ADMIN"],
        lambda a: set(host(a)["CapAdd"]) == {"SYS_PTRACE", "NET_ADMIN"},
    ),
    (["--cap-drop", "CHOWN"], lambda a: host(a)["CapDrop"] == ["CHOWN"]),
    (["--gpus", "all"], lambda a: host(a)["DeviceRequests"][0]["Count"] == -1),
    (["--gpus", "device=0,1"], lambda a: host(a)["DeviceRequests"][0]["DeviceIDs"] == ["0", "1"]),
    (
        ["--ulimit", "nofile=1024:2048"],
        lambda a: host(a)["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}],
    ),
    (["--tmpfs", "/scratch:size=64m"], lambda a: host(a)["Tmpfs"] == {"/scratch": "size=64m"}),
    (
        ["--label", "team=vision", "-l", "tier=gold"],
        lambda a: (cfg(a)["Labels"]["team"], cfg(a)["Labels"]["tier"]) == ("vision", "gold"),
    ),
    (["-w", "/tmp"], lambda a: cfg(a)["WorkingDir"] == "/tmp"),
    (["--workdir=/srv"], lambda a: cfg(a)["WorkingDir"] == "/srv"),
    (["--entrypoint", "/usr/bin/env"], lambda a: cfg(a)["Entrypoint"] == ["/usr/bin/env"]),
    (["--add-host", "db.local:10.9.8.7"], lambda a: host(a)["ExtraHosts"] == ["db.local:10.9.8.7"]),
    (["--cpus", "1.5"], lambda a: host(a)["NanoCpus"] == 1_500_000_000),
    (["--memory", "256m"], lambda a: host(a)["Memory"] == 256 * 1024**2),
    (["-m", "1g", "--memory-swap", "2g"], lambda a: host(a)["MemorySwap"] == 2 * 1024**3),
    (["--pids-limit", "99"], lambda a: host(a)["PidsLimit"] == 99),
    (["--security-opt", "no-new-privileges"], lambda a: host(a)["SecurityOpt"] == ["no-new-privileges"]),
    (["--runtime", "runc"], lambda a: host(a)["Runtime"] == "runc"),
    (["--hostname", "trainer-7"], lambda a: cfg(a)["Hostname"] == "trainer-7"),
    (["--group-add", "4242"], lambda a: host(a)["GroupAdd"] == ["4242"]),
    (["--shm-size", "128m"], lambda a: host(a)["ShmSize"] == 128 * 1024**2),
    (["--ipc=host"], lambda a: host(a)["IpcMode"] == "host"),
    (["--network", "none"], lambda a: host(a)["NetworkMode"] == "none"),
    (["-v", "/tmp:/mnt/tmp:ro"], lambda a: "/tmp:/mnt/tmp:ro" in host(a)["Binds"]),
    (["-e", "A=1", "-eB=2"], lambda a: {"A=1", "B=2"} <= set(cfg(a)["Env"])),
    (["--read-only"], lambda a: host(a)["ReadonlyRootfs"] is True),
    (["--sysctl", "net.core.somaxconn=1024"], lambda a: host(a)["Sysctls"] == {"net.core.somaxconn": "1024"}),
    (["--dns", "10.0.0.53"], lambda a: host(a)["Dns"] == ["10.0.0.53"]),
    (["--pid", "host"], lambda a: host(a)["PidMode"] == "host"),
    (["--cpuset-cpus", "0"], lambda a: host(a)["CpusetCpus"] == "0"),
    (["--cpu-shares", "512"], lambda a: host(a)["CpuShares"] == 512),
    (["--oom-score-adj", "100"], lambda a: host(a)["OomScoreAdj"] == 100),
    (["--stop-signal", "SIGINT"], lambda a: cfg(a)["StopSignal"] == "SIGINT"),
    (
        ["--restart", "on-failure:3"],
        lambda a: host(a)["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3},
    ),
    (
        ["--log-driver", "json-file", "--log-opt", "max-size=1m"],
        lambda a: host(a)["LogConfig"]["Config"] == {"max-size": "1m"},
    ),
    (["--health-cmd", "true", "--health-interval", "30s"], lambda a: cfg(a)["Healthcheck"]["Interval"] == 30 * 10**9),
    (["--mount", "type=tmpfs,target=/cache"], lambda a: host(a)["Mounts"][0]["Target"] == "/cache"),
    (["--expose", "8080"], lambda a: "8080/tcp" in cfg(a)["ExposedPorts"]),
    (["-it"], lambda a: cfg(a)["Tty"] is True and cfg(a)["OpenStdin"] is True),
    (["--rm", "-d", "--init"], lambda a: host(a)["Init"] is True),
    (["--privileged --user 1000 -e X=1"], lambda a: host(a)["Privileged"] and cfg(a)["User"] == "1000"),
]


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    yield from python_image()


def _spec(args: list[str], name: str) -> ContainerSpec:
    opts = parse_docker_args(args, {})
    return ContainerSpec(
        image=IMAGE,
        command=["true"],
        name=opts.name or name,
        labels={**opts.labels, "fleet.test": "runflags"},
        environment=opts.environment,
        volumes=opts.volumes,
        working_dir=opts.working_dir or "/",
        ipc_mode=opts.ipc_mode,
        shm_size=opts.shm_size,
        network_mode=opts.network_mode or "none",
        options=opts.options,
        shown_args=opts.shown,
    )


@pytest.mark.parametrize(("args", "check"), TABLE, ids=[" ".join(a) for a, _ in TABLE])
def test_each_docker_run_option_takes_effect_on_the_engine(client: Any, args: list[str], check: Check) -> None:
    spec = _spec(args, f"fleet-runflags-{abs(hash(tuple(args))) % 10**8}")
    kwargs = spec.kwargs()
    kwargs.pop("detach")
    container = client.containers.create(**kwargs)
    try:
        container.reload()
        assert check(container.attrs), container.attrs
    finally:
        container.remove(force=True)
    shown = spec.shown()  # the log's docker run line carries each option
    assert all(arg in shown for arg in spec.shown_args), shown


def test_options_act_inside_a_running_container(client: Any, tmp_path: Path) -> None:
    env_file = tmp_path / "task.env"
    env_file.write_text("# a comment\nFROM_FILE=yes\n\nSECOND=2\n")
    # uid 0: the test image's files are root's alone; the group shows --user took effect
    args = [
        "--user",
        "0:4321",
        "--group-add",
        "777",
        "-w",
        "/tmp",
        "--hostname",
        "fleet-box",
        "--env-file",
        str(env_file),
    ]
    args += ["--add-host", "db.local:10.9.8.7", "--tmpfs", "/scratch", "--entrypoint", "/usr/bin/python3"]
    spec = _spec(args, "fleet-runflags-live")
    code = (
        "import os, socket; print(777 in os.getgroups()); print(os.getgid()); print(os.getcwd()); "
        "print(socket.gethostname()); print(os.environ['FROM_FILE'] + os.environ['SECOND']); "
        "print(open('/etc/hosts').read().count('db.local')); open('/scratch/x', 'w').close(); print('tmpfs')"
    )
    spec.command = ["-c", code]  # the entry point (python3) gets the command as its arguments
    kwargs = spec.kwargs()
    kwargs.pop("detach")
    container = client.containers.create(**kwargs)
    try:
        container.start()
        assert container.wait(timeout=60)["StatusCode"] == 0, container.logs()
        out = container.logs().decode().split("\n")
    finally:
        container.remove(force=True)
    assert out[:5] == ["True", "4321", "/tmp", "fleet-box", "yes2"], out
    assert out[5:7] == ["1", "tmpfs"], out


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--cidfile", "/tmp/c"], "'--cidfile' cannot be expressed through the docker SDK"),
        (["--detach-keys", "ctrl-a"], "'--detach-keys' cannot be expressed"),
        (["--ip", "10.0.0.2"], "'--ip' cannot be expressed"),
        (["--bogus"], "'--bogus' is not a docker run option"),
        (["--ulimit", "nofile"], "expected KEY=VALUE"),
        (["--cpus", "many"], "expected an integer"),
        (["--memory", "lots"], "expected a size"),
        (["--env-file", "/no/such/file"], "expected a readable file"),
    ],
)
def test_what_cannot_be_expressed_is_refused_naming_it(args: list[str], named: str) -> None:
    with pytest.raises(DockerArgsError, match=named):
        parse_docker_args(args)


def test_secrets_stay_masked_in_the_shown_command() -> None:
    opts = parse_docker_args(
        ["-e", "AWS_SECRET_ACCESS_KEY=s3cr3t", "--label", "u=https://me:pw123@host/x", "--privileged"]
    )
    spec = ContainerSpec(
        IMAGE, ["true"], "n", opts.labels, opts.environment, {}, "/", options=opts.options, shown_args=opts.shown
    )
    shown = spec.shown()
    assert "s3cr3t" not in shown and "pw123" not in shown and "--privileged" in shown
