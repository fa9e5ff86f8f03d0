"""Preparation end to end through a real manager and workers: uv, pip and
poetry each build and run a task that needs a small pure-Python package (``six``,
from the package registry); the second identical task reuses the environment;
eviction at ``max_entries``; two concurrent identical tasks build once; the
setup script's output and failure; a failed install's reason; abort during
preparation.

The download caches (``pip_download_cache.path``) are shared by every test of
the session, so each package is fetched once; each test has its own home and
so its own environment cache.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from fleet.worker.envs.poetry import poetry_binary
from tests.conftest import CONFIG, Fleet

SIX = "import six, sys; print('six', six.__version__, sys.prefix)"


@pytest.fixture(scope="session")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


def configure(fleet: Fleet, downloads: Path, manager: str = "uv", extra: str = "") -> None:
    """Write this test's config (before ``up``): the manager and the shared download cache."""
    agent = f'agent {{\n  package_manager {{ type: {manager} }}\n  pip_download_cache {{ path: "{downloads}" }}\n{extra}}}\n'
    (fleet.root / "fleet.conf").write_text(CONFIG + agent)


def create(fleet: Fleet, command: list[str], **body: Any) -> str:
    with fleet.api() as api:
        answer = api.post("/tasks", json={"command": command, "working_dir": str(fleet.root), "queue": "q", **body})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])


def log_of(fleet: Fleet, task_id: str) -> str:
    path = fleet.home / "logs" / "tasks" / f"{task_id}.log"
    return path.read_text() if path.exists() else ""


def finish(fleet: Fleet, task_id: str, timeout: float = 240) -> tuple[dict[str, Any], str]:
    fleet.wait_for(lambda: fleet.task(task_id)["status"] in ("completed", "failed", "stopped"), timeout, task_id)
    return fleet.task(task_id), log_of(fleet, task_id)


def run_six(fleet: Fleet, package: str = "six") -> tuple[dict[str, Any], str]:
    return finish(fleet, create(fleet, ["python", "-c", SIX], requirements={"packages": [package]}))


@pytest.mark.parametrize("manager", ["uv", "pip", "poetry"])
def test_manager_builds_then_reuses(fleet: Fleet, downloads: Path, manager: str) -> None:
    if manager == "poetry" and poetry_binary() is None:
        pytest.skip("poetry is not installed (pip install -e '.[test]')")
    configure(fleet, downloads, manager)
    fleet.up("--cpu-only", "--queue", "q", "--create-queue")
    task, log = run_six(fleet, "Six")
    assert task["status"] == "completed", (task["status_reason"], log)
    assert f"[prepare] building a {manager} environment" in log
    assert "six 1.17" in log or "six 1." in log
    cache = fleet.home / "venvs-cache"
    assert f"{cache}/" in log  # sys.prefix printed by the task: the env's python ran
    assert task["env_cached"] is False
    frozen = task["requirements"]["frozen"]
    assert any(line.startswith("six==") for line in frozen), frozen
    assert task["requirements"]["manager"] == manager
    assert task["requirements"]["python"].count(".") == 2

    again, log2 = run_six(fleet, "six")  # same requirement once normalised
    assert again["status"] == "completed", (again["status_reason"], log2)
    assert again["env_cached"] is True
    assert "reusing cached environment" in log2
    assert "building" not in log2 and "$ " not in log2  # no install step at all
    assert again["requirements"]["frozen"] == frozen


def test_plain_task_still_runs_directly(fleet: Fleet, downloads: Path) -> None:
    configure(fleet, downloads)
    fleet.up("--cpu-only", "--queue", "q", "--create-queue")
    task, log = finish(fleet, create(fleet, ["python", "-c", "print('plain')"]))
    assert task["status"] == "completed"
    assert "[prepare]" not in log and "plain" in log
    assert task["env_cached"] is False and "frozen" not in task["requirements"]


def test_eviction_at_max_entries(fleet: Fleet, downloads: Path) -> None:
    configure(fleet, downloads, extra="  venvs_cache { max_entries: 1 }\n")
    fleet.up("--cpu-only", "--queue", "q", "--create-queue")
    first, _ = run_six(fleet, "six")
    second, log = run_six(fleet, "six==1.17.0")
    assert first["status"] == second["status"] == "completed"
    assert "evicted cached environment" in log
    cache = fleet.home / "venvs-cache"
    assert len(list(cache.glob("*.ready"))) == 1
    third, log3 = run_six(fleet, "six")
    assert third["env_cached"] is False and "building a uv environment" in log3


def test_concurrent_identical_tasks_build_once(fleet: Fleet, downloads: Path) -> None:
    # pip builds take seconds, so both tasks are surely preparing at the same time
    configure(fleet, downloads, "pip")
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    fleet.up("--gpus", "1", "--queue", "q")
    with fleet.api() as api:
        fleet.wait_for(lambda: sum(w["state"] == "idle" for w in api.get("/workers").json()["workers"]) == 2)
    ids = [create(fleet, ["python", "-c", SIX], requirements={"packages": ["six"]}) for _ in range(2)]
    results = [finish(fleet, i) for i in ids]
    assert [t["status"] for t, _ in results] == ["completed", "completed"], [t["status_reason"] for t, _ in results]
    assert sorted(t["worker"].rsplit(":", 1)[1] for t, _ in results) == ["gpu0", "gpu1"]
    logs = [log for _, log in results]
    assert sum("[prepare] building a pip environment" in log for log in logs) == 1
    assert sum(t["env_cached"] for t, _ in results) == 1
    assert any("waiting for another task that is building" in log for log in logs)
    assert len(list((fleet.home / "venvs-cache").glob("*.ready"))) == 1


def test_setup_script_output_and_failure(fleet: Fleet, downloads: Path) -> None:
    configure(fleet, downloads)
    fleet.up("--cpu-only", "--queue", "q", "--create-queue")
    script = 'echo "setup in $(pwd)"; echo made > made-by-setup.txt\n'
    ok, log = finish(fleet, create(fleet, ["cat", "made-by-setup.txt"], setup_script=script))
    assert ok["status"] == "completed", ok["status_reason"]
    assert f"setup in {fleet.root}" in log and "made" in log
    bad, log = finish(fleet, create(fleet, ["true"], setup_script="echo about to fail; exit 3"))
    assert bad["status"] == "failed"
    assert "about to fail" in log
    assert bad["status_reason"].endswith("setup script failed (exit code 3)"), bad["status_reason"]


def test_failed_install_fails_the_task_with_the_reason(fleet: Fleet, downloads: Path) -> None:
    configure(fleet, downloads)
    fleet.up("--cpu-only", "--queue", "q", "--create-queue")
    task, _ = run_six(fleet, "fleet-no-such-package-4f9a2c")
    assert task["status"] == "failed"
    reason = task["status_reason"]
    assert "uv install failed:" in reason and "fleet-no-such-package-4f9a2c" in reason, reason
    assert not list((fleet.home / "venvs-cache").glob("*.ready"))  # a failed build is never cached


def test_abort_during_preparation(fleet: Fleet, downloads: Path) -> None:
    configure(fleet, downloads)
    fleet.up("--cpu-only", "--queue", "q", "--create-queue")
    task_id = create(fleet, ["true"], setup_script="echo sleeping; sleep 60")
    fleet.wait_for(lambda: "sleeping" in log_of(fleet, task_id), 30)
    started = time.monotonic()
    fleet.ok("abort", task_id)
    task, _ = finish(fleet, task_id, 30)
    assert task["status"] == "stopped"
    assert time.monotonic() - started < 10


def test_repo_task_uses_the_repos_requirements(fleet: Fleet, downloads: Path, tmp_path: Path) -> None:
    from tests.gitrepo import make_repo

    repo = make_repo(tmp_path / "git")
    repo.write("requirements.txt", "# what the code needs\nsix\n")
    repo.write("use_six.py", "import six, sys\nprint('repo six', six.__version__, sys.prefix)\n")
    commit = repo.commit("needs six")
    configure(fleet, downloads)
    fleet.up("--cpu-only", "--queue", "q", "--create-queue")
    task_id = create(
        fleet,
        ["python", "use_six.py"],
        script={"repo": str(repo.remote), "commit": commit},
        setup_script="echo setup sees $(ls use_six.py)",
    )
    task, log = finish(fleet, task_id)
    assert task["status"] == "completed", (task["status_reason"], log)
    assert "setup sees use_six.py" in log  # the setup script runs in the checkout, before the build
    assert "environment (Python" in log and "from requirements.txt" in log
    assert "repo six 1." in log and str(fleet.home / "venvs-cache") in log
    assert (fleet.home / "work" / task_id / "use_six.py").is_file()


def test_one_off_environments_of_ended_tasks_go_before_a_prepared_task_starts(fleet: Fleet) -> None:
    """A task whose requirements cannot be cached builds an environment of its
    own under ``venvs-builds/<task id>``; the worker removes those of tasks no
    longer running when it launches a prepared task (the preparing step
    itself opens no store), and keeps a running task's."""
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    fleet.up("--gpus", "1", "--queue", "q")
    ended = create(fleet, ["true"])
    assert finish(fleet, ended)[0]["status"] == "completed"
    running = create(fleet, ["sleep", "60"])
    fleet.wait_for(lambda: fleet.task(running)["status"] == "in_progress", 30, "the long task runs")
    builds = fleet.home / "venvs-builds"
    unknown = "0123456789abcdef" * 2
    for name in (ended, running, unknown, "not-a-task-folder"):
        (builds / name / "bin").mkdir(parents=True)
    prepared, _ = finish(fleet, create(fleet, ["true"], setup_script="echo set up"))
    assert prepared["status"] == "completed", prepared["status_reason"]
    assert sorted(p.name for p in builds.iterdir()) == sorted([running, "not-a-task-folder"])
    fleet.ok("abort", running)
