"""``fleetctl build --docker`` on a real engine (issue 5, item 6).

The images are built from the local test image (:mod:`tests.dockerimage`);
the build containers run with ``--network=none``.  An image with an entry
point runs with ``--network host`` so fleet's runner inside reaches the
manager on 127.0.0.1, as it would on a GPU host.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONFIG, Fleet
from tests.dockerimage import IMAGE, make_wheel, python_image
from tests.gitrepo import GIT_ENV, Repo, make_repo

docker = pytest.importorskip("docker")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    yield from python_image()


@pytest.fixture
def built(client: Any) -> Iterator[list[str]]:
    """Image names a test makes; removed after it."""
    names: list[str] = []
    yield names
    for name in names:
        try:
            client.images.remove(name, force=True)
        except docker.errors.ImageNotFound:
            pass


def _config(fleet: Fleet) -> None:
    agent = f"""
agent {{
  default_docker {{ image: "{IMAGE}" }}
  extra_docker_arguments: ["--network=none"]
  hide_docker_command_env_vars {{ extra_keys: ["MY_TOKEN_LIKE"] }}
}}
"""
    (fleet.root / "fleet.conf").write_text(CONFIG + agent)


def _manager(fleet: Fleet) -> None:
    """A manager whose one worker serves another queue: tasks in ``nobody`` stay queued."""
    _config(fleet)
    fleet.up("--cpu-only", "--queue", "other", "--create-queue")
    fleet.ok("queue", "create", "nobody")


def _git_task(fleet: Fleet, tmp_path: Path, *opts: str) -> tuple[Repo, str]:
    """A task of a repository with a requirement (a local wheel) and an uncommitted change,
    submitted to a queue no worker serves."""
    fleet.env.update(GIT_ENV)
    repo = make_repo(tmp_path / "src")
    make_wheel(repo.work / "wheels", "tinydep", "1.0", "WHO = 'tinydep from a wheel'\n")
    repo.write("requirements.txt", "./wheels/tinydep-1.0-py3-none-any.whl\n")
    repo.write(
        "pkg/sub/run.py",
        "import os, sys, tinydep\n"
        "print('run', tinydep.WHO, 'in', os.getcwd(), 'venv', sys.prefix, 'args', sys.argv[1:])\n"
        "print('task', os.environ.get('FLEET_TASK_ID'), 'plain', os.environ.get('PLAIN'),"
        " 'secret', os.environ.get('AWS_SECRET_ACCESS_KEY'))\n"
        "sys.exit(int(os.environ.get('EXIT', '0')))\n",
    )
    repo.commit("a requirement")
    repo.write("pkg/__init__.py", "VALUE = 'uncommitted'\n")
    opts = ("--env", "PLAIN=plain-value", "--env", "AWS_SECRET_ACCESS_KEY=s3cr3t-value", *opts)
    task_id = fleet.submit("nobody", "python3", "run.py", "--lr", "0.1", opts=opts, cwd=repo.work / "pkg" / "sub")
    return repo, task_id


def _build(
    fleet: Fleet, tmp_path: Path, built: list[str], tag: str, *opts: str, task_opts: tuple[str, ...] = ()
) -> tuple[str, str, str]:
    """A manager, a git task and an image built from it: (task id, image, build output)."""
    _manager(fleet)
    _, task_id = _git_task(fleet, tmp_path, *task_opts)
    image = f"fleet-test-built-{os.getpid()}:{tag}"
    built.append(image)
    result = fleet.cli("build", "--id", task_id, "--docker", "--target", image, *opts)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"built image {image}" in output
    return task_id, image, output


def _run(client: Any, image: str, **kwargs: Any) -> str:
    out = client.containers.run(image, remove=True, stdout=True, stderr=True, **kwargs)
    return bytes(out).decode()


@pytest.fixture
def elsewhere(client: Any) -> Iterator[Any]:
    """A build container of another fleet on the same engine (another user's, another
    test run's), as there may be at any moment on a shared engine."""
    other = client.containers.create(
        IMAGE, ["true"], name=f"fleet-build-elsewhere-{os.getpid()}", labels={"fleet.build": "f" * 32}
    )
    yield other
    other.remove(force=True)


def test_base_image_has_the_code_and_environment_but_no_secret(
    fleet: Fleet, client: Any, tmp_path: Path, built: list[str], elsewhere: Any
) -> None:
    task_id, image, output = _build(fleet, tmp_path, built, "base")
    assert "not baked into the image (secrets): AWS_SECRET_ACCESS_KEY" in output
    assert "s3cr3t-value" not in output
    attrs = client.images.get(image).attrs["Config"]
    assert attrs["WorkingDir"] == "/fleet/code/pkg/sub"
    assert attrs["Cmd"] == ["python3", "run.py", "--lr", "0.1"]
    assert attrs["Labels"]["fleet.built_from"] == task_id
    assert not attrs.get("Volumes")  # the build's bind mounts are not declared volumes of the image
    assert "s3cr3t" not in json.dumps(attrs) and "PLAIN=plain-value" in attrs["Env"]
    # The image runs the task's command on its own, with the code, the diff and the requirement.
    out = _run(client, image, network_mode="none")
    assert "run tinydep from a wheel in /fleet/code/pkg/sub venv /fleet/venv args ['--lr', '0.1']" in out, out
    assert "plain plain-value secret None" in out
    diff = _run(client, image, command=["python3", "-c", "import pkg; print(pkg.VALUE)"], working_dir="/fleet/code")
    assert diff.strip() == "uncommitted"
    assert fleet.task(task_id)["status"] == "queued"  # building changes nothing about the task
    # Our build container is gone; only this build's are looked for (by its label), since
    # the engine is shared: counting every ``fleet-build-`` container made this test fail
    # whenever another fleet was building at the same moment.
    assert client.containers.list(all=True, filters={"label": f"fleet.build={task_id}"}) == []
    assert elsewhere.id in {c.id for c in client.containers.list(all=True)}  # another's build is left alone


def test_reuse_task_image_runs_the_task_and_reports_to_the_manager(
    fleet: Fleet, client: Any, tmp_path: Path, built: list[str]
) -> None:
    task_id, image, output = _build(fleet, tmp_path, built, "reuse", "--entry-point", "reuse_task")
    assert (
        f"docker run --rm --init --network host -e FLEET_API_URL={fleet.url} -e AWS_SECRET_ACCESS_KEY"
        f" -e FLEET_API_TOKEN {image}" in output
    )
    env = {"FLEET_API_URL": fleet.url, "FLEET_API_TOKEN": fleet.token, "AWS_SECRET_ACCESS_KEY": "given-at-run"}
    out = _run(client, image, network_mode="host", environment=env)
    task = fleet.task(task_id)
    log = fleet.ok("logs", task_id, "--no-timestamps")
    assert task["status"] == "completed", out + log
    assert task["exit_code"] == 0 and task["attempt"] == 1
    assert task["worker"].endswith(":image")
    assert f"task {task_id} plain plain-value secret given-at-run" in log
    assert "run tinydep from a wheel in /fleet/code/pkg/sub venv /fleet/venv" in log
    assert "given-at-run" not in fleet.ok("show", task_id)


def test_clone_task_image_runs_a_new_clone_each_time(
    fleet: Fleet, client: Any, tmp_path: Path, built: list[str]
) -> None:
    task_id, image, _ = _build(
        fleet, tmp_path, built, "clone", "--entry-point", "clone_task", task_opts=("--env", "EXIT=3")
    )
    env = {"FLEET_API_URL": fleet.url, "FLEET_API_TOKEN": fleet.token}
    container = client.containers.run(image, network_mode="host", environment=env, detach=True)
    try:
        assert container.wait()["StatusCode"] == 3
    finally:
        container.remove(force=True)
    assert fleet.task(task_id)["status"] == "queued"  # the original is left as it was
    with fleet.api() as api:
        tasks = api.get("/tasks").raise_for_status().json()["tasks"]
    (clone,) = [t for t in tasks if t["id"] != task_id]
    assert clone["parent"] == task_id and clone["status"] == "failed" and clone["exit_code"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--target", "Bad Name"), "--target 'Bad Name': expected an image name"),
        (
            ("--target", "img:tag", "--entry-point", "reuse"),
            "--entry-point: expected one of reuse_task, clone_task, got 'reuse'",
        ),
    ],
)
def test_bad_build_arguments_are_refused(fleet: Fleet, client: Any, args: tuple[str, ...], message: str) -> None:
    _manager(fleet)
    task_id = fleet.submit("nobody", "true")
    before = {i.id for i in client.images.list()}
    result = fleet.cli("build", "--id", task_id, "--docker", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert {i.id for i in client.images.list()} == before


def test_entry_point_needs_docker(fleet: Fleet, tmp_path: Path) -> None:
    _manager(fleet)
    task_id = fleet.submit("nobody", "true")
    result = fleet.cli("build", "--id", task_id, "--target", str(tmp_path / "out"), "--entry-point", "reuse_task")
    assert result.returncode == 2 and "--entry-point reuse_task: only with --docker" in result.stderr
    assert not (tmp_path / "out").exists()
