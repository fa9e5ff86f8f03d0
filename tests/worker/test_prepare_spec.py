"""The worker hands the preparing step its task and config in one owner-only
file: what goes in comes out, secrets stay out of the argument vector, the
file is gone once read, and the step's start-up imports none of the heavy
libraries the store and the config file would bring."""

from __future__ import annotations

import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fleet.core.config import parse_config_string
from fleet.core.home import Home
from fleet.core.models import DockerMode, Script, TaskRequirements, Worker, WorkerMode, WorkerState
from fleet.worker.launch import plan_launch
from fleet.worker.launch_outcome import LaunchKind
from fleet.worker.prepare import parse_args
from fleet.worker.prepare_spec import read_spec, spec_path, write_spec
from tests.factories import running_task

SECRET = "pa55-w0rd-xyz"
REQS = TaskRequirements(packages=("six",), python_version="3.11")
CONFIG = f"""
agent {{
  git_user: bob
  git_pass: "{SECRET}"
  package_manager {{ type: pip, extra_index_url: ["https://idx.example/simple"], pip_version: ["<25"] }}
  docker_internal_mounts {{ apt_cache: /var/cache/apt }}
}}
fleet {{ poll_interval: 3 }}
"""


def git_task() -> tuple[Script, dict[str, str]]:
    script = Script(
        ["python", "main.py", "--lr", "0.1"],
        "/somewhere",
        repo="https://example.com/org/repo.git",
        commit="a" * 40,
        diff="diff --git a/x b/x\n",
        repo_dir="sub",
        setup_script="echo hi\n",
    )
    return script, {"SEED": "7"}


def test_the_task_and_config_round_trip_and_the_file_is_gone(tmp_path: Path) -> None:
    config = parse_config_string(CONFIG, tmp_path / "fleet.conf")
    script, env = git_task()
    task = running_task(script, env=env, attempt=3, requirements=REQS, docker=DockerMode("x", ("--shm-size", "1g")))
    path = spec_path(tmp_path, task.id, task.attempt)
    write_spec(path, task, config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    got, got_config = read_spec(path)
    assert not path.exists()
    assert got_config == config
    assert (got.id, got.attempt, got.script, got.env) == (task.id, 3, script, env)
    assert (got.requirements, got.docker) == (REQS, DockerMode("x", ("--shm-size", "1g")))


def test_a_missing_or_foreign_file_is_an_error_the_step_falls_back_on(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        read_spec(tmp_path / "none.json")
    path = tmp_path / "other.json"
    path.write_text('{"v": 99}')
    with pytest.raises(ValueError):
        read_spec(path)


def test_the_launch_passes_the_file_not_the_secrets(tmp_path: Path) -> None:
    """A process with another thread (the PostgreSQL store's pool) starts the
    preparing step as a new interpreter: the task and config go in the file."""
    config = parse_config_string(CONFIG, tmp_path / "fleet.conf")
    script, env = git_task()
    task = running_task(script, env=env, attempt=1)
    worker = Worker("h:cpu", "h", WorkerMode.STATIC, None, [], False, WorkerState.BUSY, "", 0.0)
    home = Home(tmp_path / "home")
    done = threading.Event()
    other = threading.Thread(target=done.wait)
    other.start()
    try:
        launch = plan_launch(task, worker, {"PATH": "/usr/bin"}, home=home, config=config)
    finally:
        done.set()
        other.join()
    assert launch.kind == LaunchKind.PREPARED and launch.become is None
    spec = spec_path(home.root, task.id, task.attempt)
    assert launch.argv[launch.argv.index("--spec") + 1] == str(spec) and spec.is_file()
    assert SECRET not in " ".join(launch.argv) and SECRET not in "".join(launch.env.values())
    assert SECRET in spec.read_text()  # it travels in the owner-only file alone


def test_a_single_threaded_worker_prepares_in_a_fork_and_writes_no_file(tmp_path: Path) -> None:
    """The worker has the task and config in memory, and every module the
    preparing step needs imported: it forks, and nothing travels at all."""
    config = parse_config_string(CONFIG, tmp_path / "fleet.conf")
    script, env = git_task()
    task = running_task(script, env=env, attempt=1)
    worker = Worker("h:cpu", "h", WorkerMode.STATIC, None, [], False, WorkerState.BUSY, "", 0.0)
    home = Home(tmp_path / "home")
    assert threading.active_count() == 1
    launch = plan_launch(task, worker, {"PATH": "/usr/bin"}, home=home, config=config)
    assert launch.kind == LaunchKind.PREPARED and launch.become is not None
    assert not spec_path(home.root, task.id, task.attempt).exists()
    assert SECRET not in " ".join(launch.argv) and SECRET not in "".join(launch.env.values())


def test_the_step_imports_no_heavy_library() -> None:
    code = (
        "import sys, fleet.worker.prepare; "
        "print(' '.join(m for m in ('pyhocon', 'pyparsing', 'sqlite_utils', 'pydantic', 'psutil', 'docker',"
        " 'fleet.store', 'tomllib') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == ""


def test_the_steps_arguments_are_checked() -> None:
    assert parse_args(["--home", "/h", "--task", "t", "--spec", "/s"]) == {"home": "/h", "task": "t", "spec": "/s"}
    for bad, words in ((["--home", "/h"], "missing --task"), (["--home"], "needs a value"), (["-x", "1"], "'-x'")):
        with pytest.raises(ValueError, match=words):
            parse_args(bad)
    done = subprocess.run(
        [sys.executable, "-m", "fleet.worker.prepare", "--home", "/h"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "missing --task" in done.stderr
