"""Rough edges a new user meets (issue 16, item 6): each is a clear message
naming what to change, with the right exit code, against a real manager."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

from tests.conftest import Fleet, fleet_at
from tests.gitrepo import git

HOST = socket.gethostname()
ROOT = Path(__file__).resolve().parents[2]


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def _queues(fleet: Fleet) -> list[str]:
    with fleet.api() as api:
        return [q["name"] for q in api.get("/queues").raise_for_status().json()["queues"]]


def _manager_and_idle_queue(fleet: Fleet) -> None:
    """A manager (with a worker on another queue) and queue ``q`` that no worker serves."""
    fleet.up("--gpus", "7", "--queue", "elsewhere", "--create-queue")
    fleet.ok("queue", "create", "q")


def test_submit_refuses_a_gpu_count_that_no_worker_of_the_queue_gives(fleet: Fleet) -> None:
    fleet.up("--gpus", "0-3", "--queue", "dual=2", "--create-queue")
    refused = fleet.cli("submit", "--queue", "dual", "--gpus", "9", "--", "true")
    assert refused.returncode == 2, refused
    line = _one_line(refused.stderr)
    assert "--gpus 9" in line and f"{HOST}:dgpu gives 2" in line
    with fleet.api() as api:
        body = {"command": ["true"], "working_dir": str(fleet.root), "queue": "dual", "gpus": 1}
        answer = api.post("/tasks", json=body)
        assert answer.status_code == 422 and answer.json()["field"] == "gpus", answer.text
        assert api.get("/tasks").json()["total"] == 0
    fleet.submit("dual", "true", opts=("--gpus", "2"))  # the pool's own count is fine


def test_queue_delete_refuses_while_a_live_worker_serves_it_unless_forced(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    refused = fleet.cli("queue", "delete", "q")
    assert refused.returncode == 2, refused
    line = _one_line(refused.stderr)
    assert f"{HOST}:gpu0" in line and "--force" in line
    assert "q" in _queues(fleet)
    fleet.ok("queue", "create", "parked")
    fleet.submit("parked", "true")
    queued = fleet.cli("queue", "delete", "parked")
    assert queued.returncode == 2 and "--force" in _one_line(queued.stderr), queued
    fleet.ok("queue", "delete", "q", "--force")
    assert "q" not in _queues(fleet)


def test_abort_of_a_task_that_ended_is_a_failure_naming_its_state(fleet: Fleet) -> None:
    _manager_and_idle_queue(fleet)
    task = fleet.submit("q", "true")
    fleet.ok("abort", task)  # queued: stopped at once
    again = fleet.cli("abort", task)
    assert again.returncode == 1, again
    assert "stopped" in _one_line(again.stderr)


def test_bad_option_values_are_in_fleets_wording(fleet: Fleet) -> None:
    for args, words in (
        (("submit", "--queue", "q", "--timeout", "1x", "--", "true"), ("--timeout", "'1x'", "a number over 0")),
        (("tasks", "--limit", "0"), ("--limit", "'0'", "an integer from 1 to 10000")),
        (("submit", "--queue", "q", "--gpus", "two", "--", "true"), ("--gpus", "'two'", "an integer")),
    ):
        result = fleet.cli(*args)
        assert result.returncode == 2, result
        line = _one_line(result.stderr)
        assert all(w in line for w in words), line
        assert "is not a valid" not in line and "Invalid value" not in line, line


def test_a_second_manager_on_a_busy_port_names_the_port_settings(fleet: Fleet, tmp_path: Path) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    port = fleet.url.rsplit(":", 1)[1]
    (tmp_path / "other").mkdir()
    with fleet_at(tmp_path / "other") as other:
        result = other.cli("up", "--port", port, "--gpus", "1", "--queue", "r", "--create-queue")
        assert result.returncode == 2, result
        line = _one_line(result.stderr)
        assert "--port" in line and "fleet.api.port" in line and port in line


def test_install_says_whether_its_bin_folder_is_on_path(tmp_path: Path) -> None:
    bindir = str(tmp_path / "bin")
    note = ROOT / "deploy" / "path-note.sh"
    env = {**os.environ, "PATH": "/usr/bin:/bin", "SHELL": "/bin/bash", "HOME": str(tmp_path)}
    missing = subprocess.run([str(note), bindir], env=env, capture_output=True, text=True, check=True).stdout
    assert "NOT on your PATH" in missing and f'export PATH="{bindir}:$PATH"' in missing and ".bashrc" in missing
    env["PATH"] = f"/usr/bin:{bindir}:/bin"
    present = subprocess.run([str(note), bindir], env=env, capture_output=True, text=True, check=True).stdout
    assert "is on your PATH" in present
    assert 'path-note.sh" "$bindir"' in (ROOT / "deploy" / "install.sh").read_text()


def test_logs_of_a_task_that_never_ran_and_tasks_of_an_unknown_queue(fleet: Fleet) -> None:
    _manager_and_idle_queue(fleet)
    task = fleet.submit("q", "true")
    result = fleet.cli("logs", task)
    assert result.returncode == 0 and result.stdout == "", result
    assert "has not started" in _one_line(result.stderr) and "queue q" in result.stderr
    fleet.ok("abort", task)
    ended = fleet.cli("logs", task)
    assert ended.returncode == 0 and "never ran (stopped" in _one_line(ended.stderr), ended
    unknown = fleet.cli("tasks", "--queue", "nosuch")
    assert unknown.returncode == 2, unknown
    assert "'nosuch' does not exist" in _one_line(unknown.stderr)
    assert task[:8] in fleet.ok("tasks", "--queue", "q")


def test_no_code_runs_a_checkout_without_a_remote_as_a_plain_task(fleet: Fleet, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "hello.txt").write_text("from the folder\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "one")
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    refused = fleet.cli("submit", "--queue", "q", "--", "cat", "hello.txt", cwd=repo)
    assert refused.returncode == 2 and "--no-code" in _one_line(refused.stderr), refused
    task = fleet.submit("q", "cat", "hello.txt", opts=("--no-code",), cwd=repo)
    assert fleet.cli("wait", task, "--timeout", "60").returncode == 0
    t = fleet.task(task)
    assert t["script"]["repo"] is None and t["script"]["working_dir"] == str(repo)
    assert "from the folder" in fleet.ok("logs", task, "--no-timestamps")
    both = fleet.cli("submit", "--queue", "q", "--no-code", "--push", "--", "true", cwd=repo)
    assert both.returncode == 2 and "--no-code" in _one_line(both.stderr), both


SHORT_TASK = "b = bytearray(160 * 2**20); b[::4096] = b'x' * len(b[::4096]); sum(range(3_000_000))"


def test_show_of_a_task_shorter_than_the_sampler_tick_has_peak_rss_and_cpu(fleet: Fleet) -> None:
    config = fleet.root / "fleet.conf"
    config.write_text(config.read_text() + "fleet { metrics { interval: 3600 } }\n")  # no tick during the task
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    task = fleet.submit("q", "python", "-c", SHORT_TASK)
    assert fleet.cli("wait", task, "--timeout", "60").returncode == 0
    usage = json.loads(fleet.ok("show", task, "--json"))["usage"]
    assert usage["samples"] == 0, usage  # the sampler never saw it: the figures are the kernel's at its exit
    assert usage["peak_rss_mb"] is not None and usage["peak_rss_mb"] >= 160, usage
    assert usage["mean_cpu_percent"] is not None and usage["mean_cpu_percent"] > 0, usage
    table = fleet.ok("show", task)
    assert "peak RSS" in table and " MB" in table.split("peak RSS", 1)[1].splitlines()[0]
