"""Secrets never leave: ClearML-style basic auth, and a sweep for planted secrets.

The sweep plants a ``git_pass``, a secret-looking environment variable
(``MY_PASSWORD``, in the manager's environment and in a task's ``--env``),
``AWS_SECRET_ACCESS_KEY`` in a task's ``--docker-args``,
the API token (config and ``FLEET_API_TOKEN``), the ClearML secret key and a
password inside a git remote URL; it runs tasks (one that clones from that
URL and fails) and then searches every file under ``logs/`` in
``FLEET_HOME``, every task's events, every API answer and every ``--json``
output for the planted values.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

from tests.conftest import Fleet

HOST = socket.gethostname()
TOKEN = "tok-PLANTED-3c9e1a"
ACCESS_KEY = "fleet-access-key"
SECRET_KEY = "sk-PLANTED-77b2f0"
GIT_PASS = "gitpass-PLANTED-51d0"
ENV_PASS = "envpass-PLANTED-a4e2"
URL_PASS = "urlpass-PLANTED-9f13"
DOCKER_PASS = "dockerpass-PLANTED-0c7b"
PLANTED = (TOKEN, SECRET_KEY, GIT_PASS, ENV_PASS, URL_PASS, DOCKER_PASS)

CONFIG = f"""
agent {{ git_user: "someone", git_pass: "{GIT_PASS}" }}
fleet {{
  stop_grace_seconds: 2
  api {{ token: "{TOKEN}", access_key: "{ACCESS_KEY}", secret_key: "{SECRET_KEY}" }}
}}
"""


def _configure(fleet: Fleet) -> None:
    (fleet.root / "fleet.conf").write_text(CONFIG)
    fleet.env["FLEET_API_TOKEN"] = TOKEN


def test_clearml_routes_take_key_secret_basic_auth(fleet: Fleet) -> None:
    _configure(fleet)
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    body = {"worker": f"{HOST}:gpu0", "runtime_properties": [{"key": "owner", "value": "ml-team"}]}
    with fleet.api(prefix="", auth=False) as anonymous, fleet.api(prefix="") as bearer:
        # curl -u key:secret, as ClearML's docs write it
        answer = anonymous.post("/workers.set_runtime_properties", json=body, auth=(ACCESS_KEY, SECRET_KEY))
        assert answer.status_code == 200, answer.text
        worker = bearer.get(f"/api/v1/workers/{HOST}:gpu0").json()
        assert worker["runtime_properties"]["owner"]["value"] == "ml-team" or "ml-team" in json.dumps(worker)
        for auth in ((ACCESS_KEY, "wrong"), ("wrong", SECRET_KEY)):
            assert anonymous.post("/workers.set_runtime_properties", json=body, auth=auth).status_code == 401
        assert anonymous.post("/workers.set_runtime_properties", json=body).status_code == 401
        assert bearer.post("/workers.set_runtime_properties", json=body).status_code == 200
        # basic auth is for the ClearML-compatible routes only
        assert anonymous.get("/api/v1/tasks", auth=(ACCESS_KEY, SECRET_KEY)).status_code == 401


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_planted_secrets_appear_nowhere(fleet: Fleet, tmp_path: Path) -> None:
    _configure(fleet)
    fleet.env["MY_PASSWORD"] = ENV_PASS
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    plain = fleet.submit("q", "python", "-c", "print('hello')", opts=("--env", f"MY_PASSWORD={ENV_PASS}"))
    docker_args = ("--docker", "img:1", "--docker-args", f"-e AWS_SECRET_ACCESS_KEY={DOCKER_PASS}")
    in_docker = fleet.cli("submit", "--queue", "q", "--json", *docker_args, "--", "python", "-c", "print(1)")
    assert in_docker.returncode == 0, in_docker.stderr
    assert json.loads(in_docker.stdout)["docker"]["args"] == ["-e", "AWS_SECRET_ACCESS_KEY=********"]
    repo = tmp_path / "proj"
    repo.mkdir()
    (repo / "train.py").write_text("print('trained')\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "add", "train.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    _git(repo, "remote", "add", "origin", f"https://someone:{URL_PASS}@127.0.0.1:9/proj.git")
    _git(repo, "update-ref", "refs/remotes/origin/main", "HEAD")  # "pushed" (the remote does not answer)
    submitted = fleet.cli("submit", "--queue", "q", "--json", "--", "python", "train.py", cwd=repo)
    outputs = [submitted.stdout, submitted.stderr, in_docker.stdout, in_docker.stderr]
    assert submitted.returncode == 0, submitted.stderr
    cloned = json.loads(submitted.stdout)["id"]
    ids = [plain, cloned, json.loads(in_docker.stdout)["id"]]
    for task_id in ids:
        waited = fleet.cli("wait", task_id, timeout=120)
        outputs += [waited.stdout, waited.stderr]
    assert "hello" in fleet.ok("logs", plain)
    assert "git clone" in fleet.ok("logs", cloned)  # the URL was used (and masked)

    assert fleet.token == TOKEN  # the configured token is the one in effect
    with fleet.api(prefix="") as api:
        for path in ("/api/v1/tasks", "/api/v1/workers", "/api/v1/queues", "/api/v1/health", "/openapi.json"):
            outputs.append(api.get(path).text)
        for task_id in ids:
            for path in (f"/api/v1/tasks/{task_id}", f"/api/v1/tasks/{task_id}/events"):
                answer = api.get(path)
                assert answer.status_code == 200, (path, answer.text)
                outputs.append(answer.text)
    for args in (("tasks", "--json"), ("status", "--json"), ("queues", "--json"), ("report", "--json")):
        result = fleet.cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        outputs += [result.stdout, result.stderr]
    for task_id in ids:
        for task_args in (("show", task_id, "--json"), ("logs", task_id)):
            result = fleet.cli(*task_args)
            outputs += [result.stdout, result.stderr]
    fleet.ok("stop")
    files = [p for p in fleet.home.rglob("*") if p.is_file() and p.suffix in (".log", ".json", "")]
    assert any(p.suffix == ".log" for p in files)
    for secret in PLANTED:
        for text in outputs:
            assert secret not in text, (secret, text[:2000])
        for file in files:
            if file.name.startswith("fleet.db"):
                continue
            assert secret not in file.read_text(errors="replace"), (secret, file)
