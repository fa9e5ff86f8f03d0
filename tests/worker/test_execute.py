"""``fleetctl execute`` and ``fleetctl build``, run as a user runs them.

Both work on the store of the home directly (no manager needed), so the
tasks here are created through the store.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from fleet.core.home import Home
from fleet.core.models import Script, TaskRequirements, TaskSpec, TaskStatus
from fleet.store import open_store
from tests.conftest import Fleet
from tests.worker.test_prepare import configure, downloads  # noqa: F401 - the session's download cache

HOST = socket.gethostname()


def make_task(
    fleet: Fleet,
    command: list[str],
    queue: str | None = None,
    env: dict[str, str] | None = None,
    requirements: TaskRequirements | None = None,
) -> str:
    store = open_store(Home(fleet.home))
    try:
        if queue is not None:
            store.create_queue(queue, [], "test")
        spec = TaskSpec(
            Script(command, str(fleet.root)), env=env or {}, requirements=requirements or TaskRequirements()
        )
        task = store.create_task(spec, queue, "test")
        return task.id
    finally:
        store.close()


def test_execute_clone_leaves_original_untouched(fleet: Fleet, downloads: Path) -> None:  # noqa: F811
    configure(fleet, downloads)
    code = "import six, sys; print('hello from', six.__name__); sys.exit(3)"
    original = make_task(fleet, ["python", "-c", code], requirements=TaskRequirements(packages=("six",)))
    result = fleet.cli("execute", "--id", original[:8], "--clone")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "[prepare] building a uv environment" in result.stdout
    assert "hello from six" in result.stdout
    store = open_store(Home(fleet.home))
    source = store.get_task(original)
    assert source.status == TaskStatus.CREATED and source.attempt == 0 and source.worker is None
    assert not source.requirements.frozen and not source.env_cached
    (clone,) = [t for t in store.list_tasks()[0] if t.parent == original]
    assert clone.status == TaskStatus.FAILED and clone.exit_code == 3
    assert clone.worker == f"{HOST}:execute"
    assert any(line.startswith("six==") for line in clone.requirements.frozen)
    assert store.list_queues() == []  # the one-claim queue is gone
    log = (fleet.home / "logs" / "tasks" / f"{clone.id}.log").read_text()
    assert "hello from six" in log


def test_execute_runs_the_task_and_records_it(fleet: Fleet, downloads: Path) -> None:  # noqa: F811
    configure(fleet, downloads)
    task_id = make_task(
        fleet, ["python", "-c", "import os; print('cuda', repr(os.environ['CUDA_VISIBLE_DEVICES']))"], "q"
    )
    env = {**fleet.env, "CUDA_VISIBLE_DEVICES": "2,3"}
    result = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "execute", "--id", task_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "cuda '2,3'" in result.stdout
    store = open_store(Home(fleet.home))
    task = store.get_task(task_id)
    assert task.status == TaskStatus.COMPLETED and task.gpus == [2, 3] and task.worker == f"{HOST}:execute"
    assert [q.name for q in store.list_queues()] == ["q"]


def test_build_target_runs_on_its_own(fleet: Fleet, downloads: Path, tmp_path: Path) -> None:  # noqa: F811
    configure(fleet, downloads)
    code = "import os, six, sys; print(six.__version__, sys.prefix, os.environ['GREETING'], sys.argv[1:])"
    task_id = make_task(
        fleet,
        ["python", "-c", code],
        env={"GREETING": 'it\'s "quoted" $HOME'},
        requirements=TaskRequirements(packages=("six",)),
    )
    target = tmp_path / "built"
    out = fleet.ok("build", "--id", task_id, "--target", str(target))
    assert "run it with" in out
    run = target / "run"
    assert os.access(run, os.X_OK)
    shutil.rmtree(fleet.home)  # nothing of the fleet is needed any more
    clean = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([str(run), "extra arg"], env=clean, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(" ", 2)[1] == str(target / "venv")
    assert "it's \"quoted\" $HOME ['extra arg']" in done.stdout


def test_build_refuses_a_folder_in_use(fleet: Fleet, tmp_path: Path) -> None:
    task_id = make_task(fleet, ["true"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    result = fleet.cli("build", "--id", task_id, "--target", str(tmp_path / "busy"))
    assert result.returncode == 2 and "expected a new or empty folder" in result.stderr
