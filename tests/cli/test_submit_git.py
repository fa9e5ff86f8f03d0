"""``fleetctl submit`` inside a git checkout, through a real manager: what the
task records, what the API shows (never the diff, the setup script or a
password), and the refusals (unpushed commit, unreadable files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Fleet
from tests.gitrepo import GIT_ENV, Repo, git, make_repo

SECRET = "s3cret-Pa55"


@pytest.fixture
def parked(fleet: Fleet) -> Fleet:
    """A manager with a queue no worker pulls from: submitted tasks stay queued."""
    fleet.env.update(GIT_ENV)
    fleet.up("--gpus", "0", "--queue", "busy", "--create-queue")
    fleet.ok("queue", "create", "parked")
    return fleet


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return make_repo(tmp_path / "src")


def show(fleet: Fleet, task_id: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(fleet.ok("show", task_id, "--json"))
    return data


def test_submit_records_the_checkout(parked: Fleet, repo: Repo, tmp_path: Path) -> None:
    repo.write("train.py", "print('dirty')\n")
    repo.write("helper.py", "X = 1\n")
    reqs = tmp_path / "reqs.txt"
    reqs.write_text(f"--extra-index-url https://bob:{SECRET}@pypi.example.com/simple\nnumpy==1.26\n")
    setup = tmp_path / "setup.sh"
    setup.write_text("echo setting up\n")
    sub = repo.work / "pkg" / "sub"
    opts = ("--requirements", str(reqs), "--packages", "rich", "click>=8", "--setup-script", str(setup))
    task_id = parked.submit("parked", "python", "run.py", "--x", opts=opts, cwd=sub)
    task = show(parked, task_id)
    script = task["script"]
    assert isinstance(script, dict)
    assert script["repo"] == str(repo.remote) and script["branch"] == "main" and script["commit"] == repo.head()
    assert script["diff"] is True and script["setup_script"] is True
    assert (script["entry_point"], script["repo_dir"]) == ("pkg/sub/run.py", "pkg/sub")
    assert script["command"] == ["python", "run.py", "--x"] and script["working_dir"] == str(sub)
    requirements = task["requirements"]
    assert isinstance(requirements, dict) and requirements["packages"] == ["rich", "click>=8"]
    assert "numpy==1.26" in requirements["file"] and SECRET not in requirements["file"]
    raw = json.dumps(task)
    assert "print('dirty')" not in raw and "echo setting up" not in raw and SECRET not in raw


def test_clean_checkout_has_no_diff(parked: Fleet, repo: Repo) -> None:
    task = show(parked, parked.submit("parked", "python", "train.py", cwd=repo.work))
    script = task["script"]
    assert isinstance(script, dict) and script["diff"] is False and script["setup_script"] is False
    assert script["entry_point"] == "train.py" and script["repo_dir"] == "."


def test_password_in_remote_url_never_shows(parked: Fleet, repo: Repo) -> None:
    git(repo.work, "remote", "set-url", "origin", f"https://bob:{SECRET}@git.example.com/org/repo.git")
    out = parked.ok("submit", "--queue", "parked", "--json", "--", "python", "train.py", cwd=repo.work)
    assert SECRET not in out
    task = json.loads(out)
    assert task["script"]["repo"] == "https://git.example.com/org/repo.git"
    assert SECRET not in parked.ok("show", task["id"]) and SECRET not in parked.ok("tasks", "--json")


def test_unpushed_commit_is_refused(parked: Fleet, repo: Repo) -> None:
    repo.write("train.py", "print('local')\n")
    commit = repo.commit(push=False)
    result = parked.cli("submit", "--queue", "parked", "--", "python", "train.py", cwd=repo.work)
    assert result.returncode == 2, result.stderr
    assert commit[:12] in result.stderr and "--push" in result.stderr
    assert json.loads(parked.ok("tasks", "--json"))["total"] == 0
    # --push: pushed, then submitted
    task_id = parked.submit("parked", "python", "train.py", opts=("--push",), cwd=repo.work)
    assert git(repo.remote, "rev-parse", "main").strip() == commit
    script = show(parked, task_id)["script"]
    assert isinstance(script, dict) and script["commit"] == commit


def test_plain_folder_records_no_repository(parked: Fleet, tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    task = show(parked, parked.submit("parked", "python", "x.py", cwd=folder))
    script = task["script"]
    assert isinstance(script, dict) and script["repo"] is None and script["diff"] is False


def test_api_checks_and_masks_git_fields(parked: Fleet) -> None:
    base = {"command": ["python", "train.py"], "working_dir": str(parked.root), "queue": "parked"}
    git_ok = {"repo": f"https://bob:{SECRET}@git.example.com/o/r.git", "commit": "a" * 40, "diff": "x"}
    bad: list[tuple[str, dict[str, Any]]] = [
        ("script.commit", {"script": {**git_ok, "commit": "HEAD"}}),
        ("script.repo", {"script": {**git_ok, "repo": "--upload-pack=touch /tmp/x"}}),
        ("script.repo_dir", {"script": {**git_ok, "repo_dir": "../up"}}),
        ("script.entry_point", {"script": {**git_ok, "entry_point": "/abs.py"}}),
        ("script.diff", {"script": {**git_ok, "diff": "a\0b"}}),
        ("setup_script", {"setup_script": "x" * 1_000_001}),
        ("requirements.packages", {"requirements": {"packages": ["a\nb"]}}),
        ("requirements.file", {"requirements": {"file": "\0"}}),
        ("requirements.extra", {"requirements": {"extra": 1}}),
    ]
    with parked.api() as api:
        for field, extra in bad:
            answer = api.post("/tasks", json={**base, **extra})
            assert answer.status_code == 422 and answer.json()["field"] == field, (field, answer.text)
        made = api.post("/tasks", json={**base, "script": git_ok, "setup_script": "echo hi"})
        assert made.status_code == 201, made.text
        task = made.json()
        assert task["script"]["repo"] == "https://bob:********@git.example.com/o/r.git"
        assert task["script"]["diff"] is True and task["script"]["setup_script"] is True
        assert SECRET not in api.get(f"/tasks/{task['id']}").text and SECRET not in api.get("/tasks").text
        clone = api.post(f"/tasks/{task['id']}/clone", json={}).json()
        assert clone["script"]["setup_script"] is True and clone["script"]["commit"] == "a" * 40


@pytest.mark.parametrize("option", ["--requirements", "--setup-script"])
def test_unreadable_files_are_usage_errors(parked: Fleet, tmp_path: Path, option: str) -> None:
    missing = tmp_path / "nope.txt"
    result = parked.cli("submit", "--queue", "parked", option, str(missing), "--", "true")
    assert result.returncode == 2 and str(missing) in result.stderr, result.stderr
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\0")
    result = parked.cli("submit", "--queue", "parked", option, str(binary), "--", "true")
    assert result.returncode == 2 and str(binary) in result.stderr, result.stderr
