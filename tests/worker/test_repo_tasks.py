"""Git tasks end to end: ``fleetctl submit`` in a dirty checkout, a worker
elsewhere runs the code exactly as it stood (committed + modified + untracked),
a diff that no longer applies fails with git's message, and a password in the
remote URL never reaches the task log or the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import Fleet
from tests.gitrepo import GIT_ENV, git, make_repo

SECRET = "pa55-w0rd-x"


def _finish(fleet: Fleet, task_id: str) -> tuple[dict[str, Any], str]:
    fleet.cli("wait", task_id, "--timeout", "120")
    return fleet.task(task_id), fleet.ok("logs", task_id, "--no-timestamps")


def test_dirty_checkout_runs_exactly_as_it_stands(fleet: Fleet, tmp_path: Path) -> None:
    fleet.env.update(GIT_ENV)
    repo = make_repo(tmp_path / "src")
    repo.write("pkg/__init__.py", "VALUE = 'modified, not committed'\n")  # tracked change
    repo.write("pkg/extra.py", "WHERE = 'untracked module'\n")  # untracked, not ignored
    repo.write("train.py", "import pkg, pkg.extra\nprint('train', pkg.VALUE, '|', pkg.extra.WHERE)\n")
    repo.write("debug.log", "ignored by .gitignore\n")
    fleet.up("--cpu-only", "--queue", "q", "--create-queue")
    task_id = fleet.submit("q", "python", "train.py", cwd=repo.work)
    # The worker's copy is its own: change the submitter's tree after submitting.
    repo.write("pkg/__init__.py", "VALUE = 'changed after submit'\n")
    task, log = _finish(fleet, task_id)
    assert task["status"] == "completed", (task["status_reason"], log)
    assert "train modified, not committed | untracked module" in log
    checkout = fleet.home / "work" / task_id
    assert (checkout / "pkg" / "extra.py").is_file() and not (checkout / "debug.log").exists()
    assert git(checkout, "rev-parse", "HEAD").strip() == task["script"]["commit"]


def test_a_diff_that_no_longer_applies_fails_with_gits_message(fleet: Fleet, tmp_path: Path) -> None:
    fleet.env.update(GIT_ENV)
    repo = make_repo(tmp_path / "src")
    first = repo.head()
    repo.write("train.py", "print('second version')\n")
    second = repo.commit("second")
    diff = git(repo.work, "diff", "--binary", first, second)  # made against the second commit's parent...
    fleet.up("--cpu-only", "--queue", "q", "--create-queue")
    body = {
        "command": ["python", "train.py"],
        "working_dir": str(repo.work),
        "queue": "q",
        "script": {"repo": str(repo.remote), "commit": second, "diff": diff},  # ...applied on the second
    }
    with fleet.api() as api:
        task_id = api.post("/tasks", json=body).raise_for_status().json()["id"]
    task, log = _finish(fleet, task_id)
    assert task["status"] == "failed"
    assert "patch does not apply" in task["status_reason"] and "train.py" in task["status_reason"]
    assert "patch does not apply" in log


def test_password_in_the_remote_never_reaches_log_or_api(fleet: Fleet, tmp_path: Path) -> None:
    fleet.env.update(GIT_ENV)
    repo = make_repo(tmp_path / "src")
    fleet.up("--cpu-only", "--queue", "q", "--create-queue")
    # A private-looking URL with credentials; nothing listens there, so the clone fails.
    url = f"https://bob:{SECRET}@127.0.0.1:9/nowhere.git"
    body = {
        "command": ["python", "train.py"],
        "working_dir": str(repo.work),
        "queue": "q",
        "script": {"repo": url, "commit": repo.head()},
    }
    with fleet.api() as api:
        created = api.post("/tasks", json=body).raise_for_status().json()
        task_id = created["id"]
        task, log = _finish(fleet, task_id)
        answers = [json.dumps(created), api.get(f"/tasks/{task_id}").text, api.get("/tasks").text]
        answers.append(api.get(f"/tasks/{task_id}/events").text)
    assert task["status"] == "failed"  # nothing listens on 127.0.0.1:9
    for text in [log, task["status_reason"], *answers, fleet.ok("show", task_id), fleet.ok("tasks")]:
        assert SECRET not in text
    assert "********" in task["script"]["repo"] or "bob" not in task["script"]["repo"]
    for path in (fleet.home / "logs").rglob("*.log"):
        assert SECRET not in path.read_text(errors="replace"), path


# what the task's shell sees of its own: the signals it ignores, its open files, whether it leads
# its session, its umask (the command is a shell, which keeps what it was given; Python would not)
SELF_VIEW = r"""
grep SigIgn /proc/self/status
ls -l /proc/$$/fd
read -r pid comm state ppid pgrp sid rest < /proc/$$/stat
[ "$sid" = "$$" ] && echo "session leader"
echo "umask $(umask)"
"""


def test_a_git_task_starts_as_clean_as_a_shell_would_start_it(fleet: Fleet, tmp_path: Path) -> None:
    """The preparing step runs in a fork of the worker (its modules already
    imported) and then becomes the task: the task still leads its own
    session, ignores none of the signals the worker's Python ignores
    (SIGPIPE, SIGXFSZ), holds none of the worker's files (its store, its
    wake-up socket) and has the task's umask, as if started from a shell."""
    fleet.env.update(GIT_ENV)
    repo = make_repo(tmp_path / "src")
    fleet.up("--cpu-only", "--queue", "q", "--create-queue")
    task_id = fleet.submit("q", "sh", "-c", SELF_VIEW, cwd=repo.work)
    task, log = _finish(fleet, task_id)
    assert task["status"] == "completed", (task["status_reason"], log)
    lines = log.splitlines()
    assert "SigIgn:\t0000000000000000" in lines, log
    files = {int(line.split(" -> ")[0].split()[-1]): line.split(" -> ", 1)[1] for line in lines if " -> " in line}
    assert files[0] == "/dev/null" and files[1].startswith("pipe:") and files[2] == files[1], log
    others = [target for fd, target in files.items() if fd > 2]
    assert all(f.endswith(".use") for f in others), log  # the environment's use lock: held across the exec
    assert "session leader" in lines and "umask 0022" in lines, log
