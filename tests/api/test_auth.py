"""Authentication by default: no local user gets the manager's rights.

Each test first tries the attack as another local user would (``runuser -u
nobody``, with curl: nobody cannot run this checkout's Python), then checks
that the manager's own user still needs no set-up at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.core.config import parse_config_string
from fleet.core.home import Home
from fleet.core.models import DockerMode, Script, Worker, WorkerMode, WorkerOptions, WorkerState
from fleet.worker.launch import plan_launch
from fleet.worker.launch_outcome import LaunchKind
from fleet.worker.prepare_spec import read_spec
from tests.conftest import Fleet, fleet_at
from tests.factories import running_task

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to act as the user nobody")

NOBODY = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else -1


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Fleet]:
    """A fleet whose home any user can reach the door of (the folders above it
    are 0711), so that only fleet's own modes stand between nobody and it."""
    root = Path(tempfile.mkdtemp(prefix="fleet-auth-", dir="/tmp"))
    root.chmod(0o711)
    try:
        with fleet_at(root) as f:
            yield f
    finally:
        shutil.rmtree(root, ignore_errors=True)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "nobody", "--", *argv], capture_output=True, text=True, timeout=60)


def curl(*args: str, sock: Path | None = None, user: str = "nobody") -> tuple[int, Any]:
    """(HTTP status, JSON body) of a curl run as ``user``; status 0 when it could not connect."""
    argv = ["curl", "-s", "-w", "\n%{http_code}", *(["--unix-socket", str(sock)] if sock else []), *args]
    if user != "root":
        argv = ["runuser", "-u", user, "--", *argv]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    body, _, code = result.stdout.rpartition("\n")
    return int(code or 0), json.loads(body) if body.strip().startswith("{") else body


def post_json(url: str, body: dict[str, Any]) -> tuple[str, ...]:
    return ("-X", "POST", url, "-H", "content-type: application/json", "-d", json.dumps(body))


def log_lines(fleet: Fleet, task_id: str) -> list[str]:
    """The task's own output lines (fleet's notes and the timestamps removed)."""
    lines = [line.split(" ", 1)[-1] for line in fleet.ok("logs", task_id).splitlines()]
    return [line for line in lines if not line.startswith("[fleet]")]


def test_another_local_user_cannot_use_the_api_and_the_owner_needs_no_setup(shared: Fleet) -> None:
    fleet = shared
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    marker = fleet.root / "pwned"
    attack = {"command": ["sh", "-c", f"id > {marker}"], "working_dir": "/tmp", "queue": "q"}

    # Over TCP (loopback) without the token: refused, nothing queued.
    status, body = curl(*post_json(f"{fleet.url}/api/v1/tasks", attack))
    assert status == 401 and "token" in body["error"]
    status, _ = curl(*post_json(f"{fleet.url}/api/v1/tasks", {**attack, "user": "root"}))
    assert status == 401
    assert json.loads(fleet.ok("tasks", "--json"))["tasks"] == []
    # A forged token fares no better.
    status, _ = curl("-H", "Authorization: Bearer guess", f"{fleet.url}/api/v1/tasks")
    assert status == 401

    # The token file and the unix socket are the manager's user's alone.
    assert as_nobody("cat", str(fleet.home / "api.token")).returncode != 0
    assert (fleet.home / "api.token").stat().st_mode & 0o777 == 0o600
    assert (fleet.home / "api.sock").stat().st_mode & 0o777 == 0o600
    assert fleet.home.stat().st_mode & 0o777 == 0o700
    status, _ = curl("http://fleet/api/v1/tasks", sock=fleet.home / "api.sock")
    assert status == 0  # could not even connect
    # Even with the modes opened by mistake, the kernel names the caller and it is refused.
    fleet.home.chmod(0o711)
    (fleet.home / "api.sock").chmod(0o666)
    status, body = curl(*post_json("http://fleet/api/v1/tasks", attack), sock=fleet.home / "api.sock")
    assert status == 403 and "nobody may not use this fleet" in body["error"]
    fleet.home.chmod(0o700)
    assert not marker.exists()
    assert json.loads(fleet.ok("tasks", "--json"))["tasks"] == []

    # The manager's user: fleetctl works with no token configured, through the socket ...
    task_id = fleet.submit("q", "id", "-u")
    assert fleet.cli("wait", task_id).returncode == 0
    assert fleet.task(task_id)["user"] == "root"
    # ... and over TCP, where it reads the token file.
    fleet.env["FLEET_API_URL"] = fleet.url
    assert "q" in fleet.ok("queues")
    del fleet.env["FLEET_API_URL"]


def test_health_shows_no_pid_or_home_without_credentials(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    with fleet.api(auth=False) as anonymous:
        health = anonymous.get("/health").raise_for_status().json()
    assert set(health) == {"status", "version"}
    assert str(fleet.home) not in json.dumps(health)
    with fleet.api() as api:
        health = api.get("/health").raise_for_status().json()
    assert health["pid"] == fleet.manager_info()["pid"] and health["home"] == str(fleet.home)
    assert health["user"] == "root"


def test_the_task_user_is_the_caller_never_a_field(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    body = {"command": ["true"], "working_dir": str(fleet.root), "queue": "q"}
    with fleet.api() as api:
        forged = api.post("/tasks", json={**body, "user": "alice"})
        assert forged.status_code == 403 and forged.json()["field"] == "user"
        assert api.get("/tasks").json()["total"] == 0
        same = api.post("/tasks", json={**body, "user": "root"}).raise_for_status().json()
        plain = api.post("/tasks", json=body).raise_for_status().json()
    assert fleet.task(same["id"])["user"] == fleet.task(plain["id"])["user"] == "root"
    # the same over the unix socket, where the kernel names the caller
    status, answer = curl(
        *post_json("http://fleet/api/v1/tasks", {**body, "user": "alice"}), sock=fleet.home / "api.sock", user="root"
    )
    assert status == 403 and answer["field"] == "user"


def test_a_login_code_works_once_and_gives_a_strict_httponly_cookie(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    link = fleet.ok("page").strip()
    assert link.startswith(fleet.url + "/#login=")  # in the fragment: never sent to a server or logged
    code = link.split("#login=", 1)[1]
    assert f"page: {fleet.url}/#login=" in fleet.ok("status")  # status prints a link of its own
    with fleet.api(auth=False) as page:
        assert page.get("/queues").status_code == 401
        assert page.post("/login/codes").status_code == 401  # minting a code needs credentials
        answer = page.post("/login", json={"code": code})
        assert answer.status_code == 200 and answer.json()["user"] == "root"
        cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert page.get("/queues").status_code == 200  # the cookie authenticates
        assert page.get("/health").json()["user"] == "root"
        page.post("/logout").raise_for_status()
        assert page.get("/queues").status_code == 401
    with fleet.api(auth=False) as other:
        again = other.post("/login", json={"code": code})
        assert again.status_code == 401 and "used or expired" in again.json()["error"]
        assert other.post("/login", json={"code": "made-up"}).status_code == 401
        assert other.get("/queues").status_code == 401


def _submit_over_socket(fleet: Fleet, as_user: str, command: list[str], **extra: Any) -> tuple[int, Any]:
    body = {"command": command, "working_dir": "/tmp", "queue": "q", **extra}
    return curl(*post_json("http://fleet/api/v1/tasks", body), sock=fleet.home / "api.sock", user=as_user)


def test_run_as_submitter_runs_a_group_members_task_as_that_user(shared: Fleet) -> None:
    fleet = shared
    # nobody's primary group stands in for a "gpu-users" group: no change to the host's groups
    (fleet.root / "fleet.conf").write_text(
        'fleet { stop_grace_seconds: 2, run_as_submitter: true, api { group: "nogroup" } }'
    )
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    assert fleet.home.stat().st_mode & 0o777 == 0o750
    assert (fleet.home / "api.sock").stat().st_mode & 0o777 == 0o660
    # the token acts as root: with run_as_submitter it stays owner-only, even for the group
    assert (fleet.home / "api.token").stat().st_mode & 0o777 == 0o600
    assert as_nobody("cat", str(fleet.home / "api.token")).returncode != 0

    status, task = _submit_over_socket(fleet, "nobody", ["id", "-u"], user="root")
    assert status == 403  # a member cannot name root as the submitter
    status, task = _submit_over_socket(fleet, "nobody", ["id", "-u"])
    assert status == 201, task
    assert task["user"] == "nobody"
    assert fleet.cli("wait", task["id"]).returncode == 0
    assert log_lines(fleet, task["id"]) == [str(NOBODY)]

    mine = fleet.submit("q", "id", "-u")
    assert fleet.cli("wait", mine).returncode == 0
    assert log_lines(fleet, mine) == ["0"]

    # docker arguments that would give nobody's container more than nobody has are refused
    docker = {"image": "img", "args": ["-e", "A=1", "-v", "/:/host"]}
    status, answer = _submit_over_socket(fleet, "nobody", ["true"], docker=docker)
    assert status == 422 and answer["field"] == "docker"
    assert "-v could give the container more than its user has on the host" in answer["error"]
    # a member changes only their own tasks
    status, answer = curl(
        "-X", "POST", f"http://fleet/api/v1/tasks/{mine}/abort", sock=fleet.home / "api.sock", user="nobody"
    )
    assert status == 403


def test_a_group_member_reads_the_token_without_run_as_submitter(shared: Fleet) -> None:
    fleet = shared
    (fleet.root / "fleet.conf").write_text('fleet { stop_grace_seconds: 2, api { group: "nogroup" } }')
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    token = as_nobody("cat", str(fleet.home / "api.token"))
    assert token.returncode == 0 and token.stdout.strip() == fleet.token
    status, health = curl("http://fleet/api/v1/health", sock=fleet.home / "api.sock")
    assert status == 200 and health["user"] == "nobody"
    assert as_nobody("cat", str(fleet.home / "fleet.db")).returncode != 0  # the rest stays the owner's


def test_an_unknown_group_is_a_config_error(fleet: Fleet) -> None:
    (fleet.root / "fleet.conf").write_text('fleet { api { group: "no-such-group-here" } }')
    result = fleet.cli("up", "--port", "0", "--gpus", "0", "--queue", "q", "--create-queue")
    assert result.returncode == 2 and "no-such-group-here" in result.stderr


def test_a_task_of_another_user_is_launched_to_run_as_that_user(tmp_path: Path) -> None:
    """The worker's side: a plain task is started as its submitter; a prepared or
    docker one by a launcher that gives up root itself, told whom to become by the
    task (its user travels in the hand-over file), with the user's HOME."""
    home = Home(tmp_path / "home")
    config = parse_config_string("fleet { run_as_submitter: true }", tmp_path / "fleet.conf")
    plain = running_task(Script(["id", "-u"], str(tmp_path)), user="nobody")
    here = Worker("h:gpu0", "h", WorkerMode.STATIC, [0], ["q"], False, WorkerState.BUSY, "", 0.0)
    docker = dataclasses.replace(here, options=WorkerOptions(docker=DockerMode("img")))
    launch = plan_launch(plain, docker, {}, home=home, config=config)
    assert launch.kind == LaunchKind.DOCKER and launch.run_as is None
    prepared = running_task(Script(["python3", "x.py"], str(tmp_path), setup_script="echo hi"), user="nobody")
    launch = plan_launch(prepared, here, {"HOME": "/root"}, home=home, config=config)
    assert launch.kind == LaunchKind.PREPARED and launch.run_as is None
    assert launch.env["HOME"] == pwd.getpwnam("nobody").pw_dir and launch.env["USER"] == "nobody"
    spec = Path(launch.argv[launch.argv.index("--spec") + 1])
    assert read_spec(spec)[0].user == "nobody"
    launch = plan_launch(plain, here, {"HOME": "/root"}, home=home, config=config)
    assert launch.run_as is not None and launch.run_as.uid == NOBODY and launch.env["HOME"] != "/root"
    assert plan_launch(running_task(plain.script, user="root"), here, {}, config=config).run_as is None
    with pytest.raises(PermissionError, match="no user"):
        plan_launch(running_task(plain.script, user="no-such-user-x"), here, {}, config=config)
