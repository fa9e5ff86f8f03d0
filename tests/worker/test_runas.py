"""Tasks that run as their submitter (``fleet.run_as_submitter``) with code to
prepare or in docker: nothing of the task runs as root, and no user can plant
code for another.

Real, as root: a manager running as root, tasks submitted over its unix socket
as ``nobody`` and as a second user made for these tests (``fleet-runas2``,
primary group ``nogroup``, the group that may use the manager here), with curl
(neither can run this checkout's Python, which lives under ``/root``; the
tasks' environments use ``/usr/bin/python3.11``).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_auth import curl, log_lines, post_json
from tests.conftest import Fleet, fleet_at
from tests.gitrepo import GIT_ENV, Repo, make_repo

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run tasks as other users")

NOBODY = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else -1
SECOND = "fleet-runas2"
PYTHON = "/usr/bin/python3.11"  # an interpreter every user can run
REPORT = """\
import os, sys
import six
print("uid", os.getuid())
print("venv-owner", os.stat(sys.prefix).st_uid)
print("prefix", sys.prefix)
print("code-owner", os.stat(__file__).st_uid)
"""


@pytest.fixture
def shared() -> Iterator[Fleet]:
    """A fleet under /tmp whose folders above the home any user can pass (0711)."""
    root = Path(tempfile.mkdtemp(prefix="fleet-runas-", dir="/tmp"))
    root.chmod(0o711)
    try:
        with fleet_at(root) as f:
            f.env.update(GIT_ENV)
            yield f
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def second_user() -> str:
    """A second submitter besides nobody, in nobody's group (left in place: other runs use it)."""
    try:
        pwd.getpwnam(SECOND)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--gid", "nogroup", SECOND],
            capture_output=True,
            text=True,
        )
        assert made.returncode in (0, 9), made.stderr  # 9: made by a run beside this one
    return SECOND


def as_user(user: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", user, "--", *argv], capture_output=True, text=True, timeout=60)


def configure(fleet: Fleet, extra: str = "") -> None:
    (fleet.root / "fleet.conf").write_text(
        'fleet { stop_grace_seconds: 2, run_as_submitter: true, api { group: "nogroup" } }\n'
        f'agent {{ python_binary: "{PYTHON}", package_manager {{ type: uv }} {extra} }}\n'
    )


def users_repo(fleet: Fleet, owner: str, files: dict[str, str | bytes]) -> Repo:
    """A repository of ``owner``'s (git refuses, rightly, to read one of another user)."""
    repo = make_repo(fleet.root / f"src-{owner}")
    for name, text in files.items():
        repo.write(name, text)
    repo.commit("the task")
    uid = pwd.getpwnam(owner).pw_uid
    for folder, dirs, names in os.walk(repo.remote):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + names)]:
            os.lchown(name, uid, -1)
    os.chmod(fleet.root / f"src-{owner}", 0o755)
    return repo


def submit_as(fleet: Fleet, user: str, command: list[str], **extra: Any) -> str:
    body = {"command": command, "working_dir": "/tmp", "queue": "q", **extra}  # working_dir: may be replaced
    status, task = curl(*post_json("http://fleet/api/v1/tasks", body), sock=fleet.home / "api.sock", user=user)
    assert status == 201, task
    assert task["user"] == user
    return str(task["id"])


def finish(fleet: Fleet, task_id: str) -> tuple[dict[str, Any], list[str]]:
    fleet.cli("wait", task_id, "--timeout", "300")
    return fleet.task(task_id), log_lines(fleet, task_id)


def said(lines: list[str], key: str) -> str:
    found = [line.split(" ", 1)[1] for line in lines if line.startswith(key + " ")]
    assert found, (key, lines)
    return found[-1]


def owner_and_mode(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, stat.S_IMODE(st.st_mode)


def test_a_git_task_with_requirements_runs_as_its_submitter_in_caches_of_theirs(
    shared: Fleet, second_user: str
) -> None:
    fleet = shared
    configure(fleet)
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    second = pwd.getpwnam(second_user).pw_uid
    repos = {
        user: users_repo(fleet, user, {"report.py": REPORT, "requirements.txt": "six\n"})
        for user in ("nobody", second_user)
    }

    # nobody's task: the checkout, the environment and the task are nobody's
    repo = repos["nobody"]
    script = {"repo": str(repo.remote), "commit": repo.head()}
    first = submit_as(fleet, "nobody", ["python", "report.py"], script=script, setup_script="echo setup-uid $(id -u)")
    task, lines = finish(fleet, first)
    assert task["status"] == "completed", (task["status_reason"], lines)
    area = fleet.home / "users" / f"u{NOBODY}"
    assert said(lines, "setup-uid") == str(NOBODY)
    assert said(lines, "uid") == str(NOBODY)
    assert said(lines, "venv-owner") == str(NOBODY)
    assert said(lines, "code-owner") == str(NOBODY)
    assert said(lines, "prefix").startswith(f"{area}/venvs-cache/")
    assert owner_and_mode(fleet.home / "users") == (0, 0o711)
    assert owner_and_mode(area) == (0, 0o711)  # root's: nothing in it can be swapped by nobody
    for name in ("work", "vcs-cache", "venvs-cache", "venvs-builds", "cache"):
        assert owner_and_mode(area / name) == (NOBODY, 0o700), name  # nobody's, and nobody else's
    assert list((area / "vcs-cache").glob("*.git")), "the mirror is in nobody's cache"
    assert not (fleet.home / "venvs-cache").exists() and not (fleet.home / "vcs-cache").exists()
    # another user can neither plant into nobody's caches nor read them
    assert as_user(second_user, "touch", str(area / "venvs-cache" / "planted")).returncode != 0
    assert as_user(second_user, "ls", str(area / "venvs-cache")).returncode != 0
    assert as_user(second_user, "touch", str(area / "planted")).returncode != 0

    # fleetctl build would run nobody's setup script and installs as root: refused; execute runs as nobody
    built = fleet.cli("build", "--id", first, "--target", str(fleet.root / "built"))
    assert built.returncode == 2 and "use fleetctl execute" in built.stderr and not (fleet.root / "built").exists()
    ran = fleet.cli("execute", "--id", first, "--clone")
    assert ran.returncode == 0 and f"uid {NOBODY}\n" in ran.stdout, ran.stdout + ran.stderr

    # nobody again: the environment is reused
    again, lines = finish(fleet, submit_as(fleet, "nobody", ["python", "report.py"], script=script))
    assert again["status"] == "completed" and again["env_cached"] is True, lines

    # the second user, the same requirements: an environment of their own, never nobody's
    repo = repos[second_user]
    theirs = {"repo": str(repo.remote), "commit": repo.head()}
    task, lines = finish(fleet, submit_as(fleet, second_user, ["python", "report.py"], script=theirs))
    assert task["status"] == "completed", (task["status_reason"], lines)
    assert task["env_cached"] is False
    assert said(lines, "uid") == said(lines, "venv-owner") == str(second)
    assert said(lines, "prefix").startswith(f"{fleet.home}/users/u{second}/venvs-cache/")

    # the manager's own user keeps the manager's caches
    mine = fleet.submit("q", "id", "-u")
    assert fleet.cli("wait", mine).returncode == 0 and log_lines(fleet, mine) == ["0"]


DOCKER_REPORT = """\
import os, sys
import tinydep
print("uid", os.getuid(), os.getgid())
print("venv-owner", os.stat(sys.prefix).st_uid)
print("code-owner", os.stat(__file__).st_uid)
with open("written-by-the-task", "w") as fh:
    fh.write(tinydep.WHO)
print("wrote", os.stat("written-by-the-task").st_uid)
try:
    os.setuid(0)
    print("became root")
except PermissionError:
    print("root refused")
"""


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from tests.dockerimage import python_image

    yield from python_image()


def test_a_docker_task_runs_as_its_submitter(shared: Fleet, client: Any) -> None:
    from tests.dockerimage import IMAGE, make_wheel

    fleet = shared
    configure(fleet, f'extra_docker_arguments: ["--network=none"], default_docker {{ image: "{IMAGE}" }}')
    fleet.up("--cpu-only", "--queue", "q", "--create-queue", "--docker")
    wheel = make_wheel(fleet.root / "wheels", "tinydep", "1.0", "WHO = 'tinydep from a wheel'\n")
    files: dict[str, str | bytes] = {"report.py": DOCKER_REPORT, f"wheels/{wheel.name}": wheel.read_bytes()}
    repo = users_repo(fleet, "nobody", {**files, "requirements.txt": f"./wheels/{wheel.name}\n"})
    script = {"repo": str(repo.remote), "commit": repo.head()}

    task, lines = finish(fleet, submit_as(fleet, "nobody", ["python", "report.py"], script=script))
    assert task["status"] == "completed", (task["status_reason"], lines)
    nogroup = pwd.getpwnam("nobody").pw_gid
    assert said(lines, "uid") == f"{NOBODY} {nogroup}"
    assert said(lines, "venv-owner") == said(lines, "code-owner") == said(lines, "wrote") == str(NOBODY)
    assert "root refused" in lines and "became root" not in lines
    log = fleet.ok("logs", task["id"], "--no-timestamps")
    assert f"--user={NOBODY}:{nogroup}" in log and "--security-opt=no-new-privileges" in log
    area = fleet.home / "users" / f"u{NOBODY}"
    assert owner_and_mode(area / "docker") == (0, 0o711)
    assert owner_and_mode(area / "docker" / task["id"]) == (NOBODY, 0o700)  # the checkout, made by nobody
    assert (area / "docker" / task["id"] / "written-by-the-task").read_text() == "tinydep from a wheel"
    assert not client.containers.list(all=True, filters={"label": f"fleet.task={task['id']}"})
    # fleetctl execute --docker, as root, decides the same way
    ran = fleet.cli("execute", "--id", task["id"], "--clone", "--docker", timeout=300)
    assert ran.returncode == 0 and f"uid {NOBODY} {nogroup}\n" in ran.stdout, ran.stdout + ran.stderr

    # a folder nobody names is mounted only where nobody cannot swap it for another (a link to a
    # folder nobody cannot reach would be mounted instead): /tmp yes (/ is root's), not one of nobody's
    task, lines = finish(fleet, submit_as(fleet, "nobody", ["python3", "-c", "print('ran')"]))
    assert task["status"] == "completed" and lines[-1] == "ran", (task["status_reason"], lines)
    project = fleet.root / "nobodys" / "project"
    project.mkdir(parents=True)
    for folder in (project, project.parent):  # readable by nobody whatever umask this test process has
        folder.chmod(0o755)
    os.chown(project.parent, NOBODY, -1)
    body = {"working_dir": str(project)}
    task, lines = finish(fleet, submit_as(fleet, "nobody", ["python3", "-c", "print('ran')"], **body))
    assert task["status"] == "failed" and "ran" not in lines
    assert f"{project} is not mounted for nobody: {project.parent}" in task["status_reason"]
