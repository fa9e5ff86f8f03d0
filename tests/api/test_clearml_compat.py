"""Coming from ClearML Agent (issue 15): its daemon lines, its clearml.conf, its worker names.

Each ``clearml-agent daemon`` line of ClearML Agent's documentation runs as written with
``fleetctl`` for ``clearml-agent`` and concrete queue names, in its own FLEET_HOME, then
the same line with ``--stop`` stops exactly the worker it started.  Lines without
``--gpus`` that need GPUs get them from the NVML stand-in of tests/worker/test_dynamic.py (this
machine has none); docker lines need the engine and skip without one.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.core.config import default_config_path, load_config
from fleet.worker.envs.builder import pip_version_for, pip_version_spec, torch_backend
from tests.conftest import CONFIG, Fleet
from tests.worker.test_dynamic import FAKE_PYNVML

HOST = socket.gethostname()
DATA = Path(__file__).parents[1] / "data"

# (the line of ClearML Agent's documentation with fleetctl and concrete names, what it needs)
DOC_LINES = [
    ("fleetctl daemon --queue default", ""),
    ("fleetctl daemon --queue default --detached", ""),
    ("fleetctl daemon --detached --queue default --gpus 0", ""),
    ("fleetctl daemon --detached --queue default --gpus 1", ""),
    ("fleetctl daemon --gpus 0,1 --queue dual_gpu &", ""),
    ("fleetctl daemon --detached --queue high_q low_q --gpus 0", ""),
    ("fleetctl daemon --detached --queue group_a group_b --order-fairness  --gpus 0", ""),
    ("fleetctl daemon --dynamic-gpus --queue dual_gpus=2 single_gpu=1", "nvml"),
    ("fleetctl daemon --dynamic-gpus --gpus 0-7 --queue quad_gpu=4 dual_gpu=2", ""),
    ("fleetctl daemon --dynamic-gpus --gpus 0-7 --queue dual=2 opportunistic=1-4", ""),
    ("fleetctl daemon --queue default --docker fleet-test-python:3", "docker"),
    ("fleetctl daemon --queue default --docker --force-current-version", "docker"),
    (
        "fleetctl daemon --services-mode --queue services --create-queue --docker fleet-test-python:3 --cpu-only",
        "docker",
    ),
]


def _queues(line: str) -> list[str]:
    words = shlex.split(line.replace("&", ""))
    at = words.index("--queue")
    out = []
    for word in words[at + 1 :]:
        if word.startswith("-"):
            break
        out.append(word.split("=")[0])
    return out


def _shell(fleet: Fleet, line: str) -> subprocess.CompletedProcess[str]:
    """The line as a shell runs it (``&`` included), waiting for what it put in the background."""
    fleetctl = f"{shlex.quote(sys.executable)} -m fleet.cli"
    script = line.replace("fleetctl", fleetctl, 1) + ("\nwait $!\n" if line.rstrip().endswith("&") else "\n")
    return subprocess.run(
        ["bash", "-c", script], env=fleet.env, cwd=fleet.root, capture_output=True, text=True, timeout=120
    )


def _workers(fleet: Fleet) -> dict[str, dict[str, Any]]:
    with fleet.api() as api:
        return {w["id"]: w for w in api.get("/workers", params={"all": True}).json()["workers"]}


def _nvml_stand_in(fleet: Fleet, count: int) -> None:
    fake = fleet.root / "fake_nvml"
    fake.mkdir(exist_ok=True)
    (fake / "pynvml.py").write_text(FAKE_PYNVML)
    state = fleet.root / "nvml.json"
    state.write_text(json.dumps({"count": count}))
    fleet.env["PYTHONPATH"] = os.pathsep.join([str(fake), fleet.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    fleet.env["FAKE_NVML_STATE"] = str(state)


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    from tests.dockerimage import python_image

    yield from python_image()


@pytest.mark.parametrize(("line", "needs"), DOC_LINES, ids=[line for line, _ in DOC_LINES])
def test_each_documented_daemon_line_starts_a_worker_and_its_stop_line_stops_exactly_it(
    fleet: Fleet, line: str, needs: str, request: pytest.FixtureRequest
) -> None:
    if needs == "docker":
        request.getfixturevalue("engine")
        (fleet.root / "fleet.conf").write_text(
            CONFIG
            + 'agent { default_docker { image: "fleet-test-python:3" }, extra_docker_arguments: ["--network=none"] }'
        )
    if needs == "nvml":
        _nvml_stand_in(fleet, 8)
    # another worker on this host, which no --stop line may touch
    fleet.up("--cpu-only", "--queue", "other", *_queues(line), "--create-queue")
    before = _workers(fleet)
    (other,) = before
    result = _shell(fleet, line)
    assert result.returncode == 0, result.stderr
    after = _workers(fleet)
    (new,) = set(after) - set(before)
    assert after[new]["state"] != "dead"
    if "--services-mode" in line:
        assert after[new]["mode"] == "services" and new == f"{HOST}:services"
    elif "=" in line:
        assert after[new]["mode"] == "dynamic" and new == f"{HOST}:dgpu"
    if "--docker" in line:
        assert after[new]["docker"]["image"] == ("" if "--force-current-version" in line else "fleet-test-python:3")
    if "--force-current-version" in line:
        assert "changes nothing here" in result.stdout + result.stderr
    stopped = _shell(fleet, line.replace(" &", "") + " --stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped {new}" in stopped.stdout
    final = _workers(fleet)
    assert final[new]["state"] == "dead"
    assert final[other]["state"] != "dead" and final[other]["pid"] == before[other]["pid"]
    again = _shell(fleet, line.replace(" &", "") + " --stop")  # nothing left that this line started
    assert again.returncode == 1 and "no running worker was started by this line" in again.stderr


def test_two_agents_on_one_machine_and_stop_takes_only_the_named_one(fleet: Fleet) -> None:
    fleet.up("--cpu-only", "--queue", "default", "--create-queue")
    for gpu in ("0", "1"):
        assert _shell(fleet, f"fleetctl daemon --detached --queue default --gpus {gpu}").returncode == 0
    assert _shell(fleet, "fleetctl daemon --detached --queue default --gpus 1 --stop").returncode == 0
    states = {wid: w["state"] for wid, w in _workers(fleet).items()}
    assert states[f"{HOST}:gpu1"] == "dead"
    assert states[f"{HOST}:gpu0"] != "dead" and states[f"{HOST}:cpu"] != "dead"


def test_foreground_line_runs_the_manager_here_and_stop_stops_its_worker(fleet: Fleet) -> None:
    (fleet.root / "fleet.conf").write_text(CONFIG + "fleet { api { port: 0 } }")
    fleet.up("--cpu-only", "--queue", "default", "--create-queue")  # the queue; then a clean home
    fleet.ok("stop")
    line = "fleetctl daemon --queue default --foreground"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet.cli", *shlex.split(line)[1:], "--log-level", "DEBUG"],
        env=fleet.env,
        cwd=fleet.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        fleet.wait_for(lambda: (fleet.home / "manager.json").exists() and _alive_manager(fleet), what="manager")
        fleet.wait_for(lambda: f"{HOST}:cpu" in _live(fleet), what="worker")
        stopped = _shell(fleet, line + " --stop")
        assert stopped.returncode == 0, stopped.stderr
        assert _workers(fleet)[f"{HOST}:cpu"]["state"] == "dead"
        assert proc.poll() is None  # the manager goes on in the foreground
    finally:
        fleet.cli("stop", "--timeout", "30")
        out, _ = proc.communicate(timeout=60)
    assert "DEBUG" in out and f"config {fleet.root / 'fleet.conf'}" in out


def _alive_manager(fleet: Fleet) -> bool:
    try:
        with fleet.api() as api:
            return api.get("/health").status_code == 200
    except Exception:
        return False


def _live(fleet: Fleet) -> set[str]:
    return {wid for wid, w in _workers(fleet).items() if w["state"] != "dead"}


def test_daemon_docker_image_and_arguments_reach_the_worker(fleet: Fleet) -> None:
    fleet.up("--cpu-only", "--queue", "other", "--create-queue")
    line = 'fleetctl daemon --queue other2 --create-queue --cpu-only --docker img:1 --ipc=host "-e A=1"'
    assert _shell(fleet, line).returncode != 0  # --ipc=host alone is an option of daemon, not of docker
    line = 'fleetctl daemon --queue other2 --create-queue --cpu-only --docker img:1 "--ipc=host -e A=1"'
    result = _shell(fleet, line)
    assert result.returncode == 0, result.stderr
    (worker,) = [w for w in _workers(fleet).values() if w["queues"] == ["other2"]]
    assert worker["docker"] == {"image": "img:1", "args": ["--ipc=host -e A=1"]}
    bad = _shell(fleet, 'fleetctl daemon --queue other3 --create-queue --cpu-only --docker img:1 "--cidfile /x"')
    assert bad.returncode == 2 and "'--cidfile' cannot be expressed" in bad.stderr


# -- worker names and ids ------------------------------------------------------------------


def test_worker_name_and_id_apply_on_every_up_and_fixed_ids_get_suffixes(fleet: Fleet) -> None:
    fleet.up("--cpu-only", "--queue", "a", "--create-queue")
    assert f"{HOST}:cpu" in _live(fleet)
    for variable in ("FLEET_WORKER_NAME", "CLEARML_WORKER_NAME"):
        fleet.env[variable] = f"box-{variable[:5].lower()}"
        fleet.up("--cpu-only", "--queue", variable.lower(), "--create-queue")
        del fleet.env[variable]
    assert {"box-fleet:cpu", "box-clear:cpu"} <= _live(fleet)
    fleet.env["CLEARML_WORKER_ID"] = "trainer"
    fleet.up("--gpus", "0", "--queue", "a")
    fleet.up("--gpus", "1", "--queue", "a")
    fleet.up("--gpus", "1", "--queue", "a")  # the same line again: the same worker
    assert _shell(fleet, "fleetctl daemon --gpus 2 --queue a").returncode == 0
    live = _live(fleet)
    assert {"trainer", "trainer:1", "trainer:2"} <= live and "trainer:3" not in live
    assert _workers(fleet)["trainer:1"]["gpus"] == [1]
    assert _shell(fleet, "fleetctl daemon --gpus 1 --queue a --stop").returncode == 0
    assert _workers(fleet)["trainer:1"]["state"] == "dead" and {"trainer", "trainer:2"} <= _live(fleet)
    del fleet.env["CLEARML_WORKER_ID"]
    (fleet.root / "fleet.conf").write_text(CONFIG + 'agent { worker_name: "from-conf" }')
    fleet.up("--cpu-only", "--queue", "b", "--create-queue")
    assert "from-conf:cpu" in _live(fleet)


# -- clearml.conf ------------------------------------------------------------------------------


def test_a_clearml_conf_with_every_agent_key_loads_without_error_or_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        config = load_config(DATA / "clearml-agent.conf", env={})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    agent = config.agent
    assert agent.package_manager.pip_version == ("<20.2 ; python_version < '3.10'", "<22.3 ; python_version >= '3.10'")
    assert agent.docker_internal_mounts["apt_cache"] == "/var/cache/apt/archives"
    assert agent.cuda_version == "10.1" and agent.cudnn_version == "7.6"
    assert agent.git_user == "builder" and agent.docker_apt_cache == "~/.clearml/apt-cache"
    assert len(agent.default_docker.match_rules) == 2


def test_pip_version_takes_the_first_specifier_whose_marker_matches() -> None:
    specs = ("<20.2 ; python_version < '3.10'", "<22.3 ; python_version >= '3.10'")
    assert pip_version_for(specs, "3.8.10") == "<20.2"
    assert pip_version_for(specs, "3.11.7") == "<22.3"
    assert pip_version_for(("==19.3.1",), "3.11.7") == "==19.3.1"
    assert pip_version_for(("<1 ; python_version < '3'",), "3.11.7") == ""
    assert pip_version_spec("<22.3 ; python_version >= '3.10'") == "pip<22.3 ; python_version >= '3.10'"
    assert pip_version_spec("20.2") == "pip==20.2"
    assert torch_backend("12.1") == "cu121" and torch_backend("11.8") == "cu118"


def test_a_bad_marker_in_pip_version_is_refused_naming_the_key(tmp_path: Path) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text("agent.package_manager.pip_version: [\"<20 ; python_version <<< '3'\"]")
    with pytest.raises(Exception, match=r"agent\.package_manager\.pip_version: expected a specifier with a PEP 508"):
        load_config(conf, env={})


def test_clearml_config_files_are_read_after_fleets_own(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert default_config_path(env) is None
    (tmp_path / "clearml.conf").write_text("agent {}")
    assert default_config_path(env) == tmp_path / "clearml.conf"
    other = tmp_path / "elsewhere.conf"
    assert default_config_path({**env, "CLEARML_CONFIG_FILE": str(other)}) == other
    (tmp_path / "fleet.conf").write_text("agent {}")
    assert default_config_path({**env, "CLEARML_CONFIG_FILE": str(other)}) == tmp_path / "fleet.conf"
    assert default_config_path({**env, "FLEET_CONFIG_FILE": "/x.conf"}) == Path("/x.conf")


def test_status_and_the_manager_log_say_which_clearml_conf_was_read(fleet: Fleet) -> None:
    conf = fleet.root / "clearml.conf"
    conf.write_text(
        CONFIG + 'agent { cuda_version: 12.1, cudnn_version: "9.1", worker_name: "cm" }\n'
        'api { api_server: "http://127.0.0.1:8008" }\nsdk { }\n'
    )
    del fleet.env["FLEET_CONFIG_FILE"]
    (fleet.root / "fleet.conf").unlink()  # ~/fleet.conf would come first (HOME is the test's folder)
    fleet.env["CLEARML_CONFIG_FILE"] = str(conf)
    fleet.up("--cpu-only", "--queue", "q", "--create-queue")
    status = " ".join(fleet.ok("status").split())  # long paths wrap
    assert "config: " in status and "cuda_version 12.1, cudnn_version 9.1" in status and "cm:cpu" in status
    assert json.loads(fleet.ok("status", "--json"))["manager"]["config"] == str(conf)
    log = (fleet.home / "logs" / "manager.log").read_text()
    assert f"config {conf}" in log and "unknown key" not in log
    task = fleet.submit(
        "q", sys.executable, "-c", "import os; print(os.environ['CUDA_VERSION'], os.environ['CUDNN_VERSION'])"
    )
    assert fleet.cli("wait", task, "--timeout", "60").returncode == 0
    assert "12.1 9.1" in fleet.ok("logs", task, "--no-timestamps")
    del fleet.env["CLEARML_CONFIG_FILE"]  # ~/clearml.conf (HOME is the test's folder)
    fleet.ok("stop")
    fleet.up("--cpu-only", "--queue", "q")
    assert json.loads(fleet.ok("status", "--json"))["manager"]["config"] == str(fleet.root / "clearml.conf")


def test_a_daemon_docker_workers_arguments_reach_its_containers(fleet: Fleet, engine: Any, tmp_path: Path) -> None:
    (fleet.root / "fleet.conf").write_text(
        CONFIG + 'agent { extra_docker_arguments: ["--network=none"], cuda_version: "12.1" }'
    )
    code = tmp_path / "proj"
    code.mkdir()
    (code / "main.py").write_text(
        "import os, socket\n"
        "print('seen', socket.gethostname(), os.environ['FROM_WORKER'], os.environ['CUDA_VERSION'])\n"
    )
    line = 'fleetctl daemon --queue dq --create-queue --cpu-only --docker fleet-test-python:3 "--hostname fleetbox -e FROM_WORKER=yes --cap-add SYS_PTRACE"'
    result = _shell(fleet, line.replace("daemon", "daemon --port 0", 1))
    assert result.returncode == 0, result.stderr
    task = fleet.submit("dq", "python3", "main.py", cwd=code)
    assert fleet.cli("wait", task, "--timeout", "120").returncode == 0, fleet.ok("logs", task)
    log = fleet.ok("logs", task, "--no-timestamps")
    assert "seen fleetbox yes 12.1" in log
    assert "--hostname=fleetbox" in log and "--cap-add=SYS_PTRACE" in log  # the docker run line in the log


def test_cuda_version_picks_the_torch_wheel_variant_with_uv_and_pip_version_follows_the_python(
    tmp_path: Path,
) -> None:
    from fleet.core.config import PackageManagerConfig
    from fleet.worker.envs import Log
    from fleet.worker.envs.builder import BuildSettings, Interpreter, Requirements
    from fleet.worker.envs.uv import UvBuilder
    from tests.worker.test_envs import Recorder

    runner = Recorder()
    uv = UvBuilder(runner)
    uv._uv = lambda: "/bin/uv"  # type: ignore[method-assign]
    pm = PackageManagerConfig(pip_version=("<20.2 ; python_version < '3.10'", "<22.3 ; python_version >= '3.10'"))
    settings = BuildSettings(pm=pm, env={"PATH": "/bin"}, cache_dir=None, torch_backend=torch_backend("12.1"))
    env = tmp_path / "env"
    env.mkdir()
    log = Log(lambda text: None)
    uv.create(env, Interpreter("/usr/bin/python3.11", "3.11.7"), settings, log)
    assert (env / "fleet-requirements.txt").read_text() == "pip<22.3\n"  # the 3.10+ specifier
    uv.install(env, Requirements(lines=("six",)), settings, log)
    assert "--torch-backend" not in runner.calls[-1]  # nothing names torch
    uv.install(env, Requirements(lines=("torch==2.3.1", "six")), settings, log)
    assert runner.calls[-1][runner.calls[-1].index("--torch-backend") + 1] == "cu121"


def test_docker_caches_follow_docker_pip_cache_apt_cache_and_internal_mounts(tmp_path: Path) -> None:
    from fleet.core.config import parse_config_string
    from fleet.core.home import Home
    from fleet.worker.docker.run import cache_volumes

    config = parse_config_string(
        f'agent {{ docker_pip_cache: "{tmp_path}/pip", docker_apt_cache: "{tmp_path}/apt",'
        ' docker_internal_mounts { pip_cache: "/home/u/.cache/pip", apt_cache: "/apt", poetry_cache: "/poetry" } }',
        tmp_path / "c.conf",
    )
    volumes = cache_volumes(Home(tmp_path / "home"), config)
    assert volumes[f"{tmp_path}/pip"] == {"bind": "/home/u/.cache/pip", "mode": "rw"}
    assert volumes[f"{tmp_path}/apt"] == {"bind": "/apt", "mode": "rw"}
    assert {"bind": "/poetry", "mode": "rw"} in volumes.values()
    assert {"bind": "/root/.cache/uv", "mode": "rw"} in volumes.values()
    plain = cache_volumes(Home(tmp_path / "home2"), parse_config_string("", tmp_path / "d.conf"))
    assert {v["bind"] for v in plain.values()} == {"/root/.cache/pip", "/root/.cache/uv", "/root/.cache/pypoetry"}
