"""Logs from any host: a task that runs on host1 is followed from host0 while
it runs, read whole from host2 after it ended (and after host1 is gone),
and host1 keeps its own file."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import Fleet

TASK = """
import os, sys, time
for i in range(5):
    print(f"line {i}", flush=True)
    time.sleep(0.2)
sys.stdout.buffer.write(b"not utf-8: \\xff\\xfe\\n")
sys.stdout.flush()
while not os.path.exists(sys.argv[1]):  # until the test has seen the lines above from host0
    time.sleep(0.05)
for i in range(5, 10):
    print(f"line {i}", flush=True)
    time.sleep(0.2)
"""


def test_a_log_is_followed_and_read_from_hosts_other_than_the_one_that_ran_it(
    hosts: list[Fleet], tmp_path: Path
) -> None:
    for i, host in enumerate(hosts):
        host.up("--queue", f"only{i}", "--cpu-only", "--create-queue")
    go = tmp_path / "go"
    script = tmp_path / "chatty.py"
    script.write_text(TASK)
    task_id = hosts[0].submit("only1", sys.executable, str(script), str(go))

    follow = subprocess.Popen(
        [sys.executable, "-m", "fleet.cli", "logs", task_id, "-f"],
        cwd=hosts[0].root,
        env=hosts[0].env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert follow.stdout is not None
        seen = b""
        deadline = time.monotonic() + 60
        while b"not utf-8" not in seen:  # the task waits for ``go``: these lines came while it ran
            ready, _, _ = select.select([follow.stdout], [], [], max(0.0, deadline - time.monotonic()))
            data = os.read(follow.stdout.fileno(), 65536) if ready else b""
            assert data, f"logs -f on host0 showed no more of the running task: {seen!r}"
            seen += data
        assert hosts[0].task(task_id)["status"] == "in_progress"
        go.touch()
        rest, errors = follow.communicate(timeout=120)  # ends by itself when the task ends
    finally:
        go.touch()
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 0, errors
    followed = (seen + rest).decode("utf-8", "replace")
    for i in range(10):
        assert f"line {i}\n" in followed, followed
    assert "attempt 1 ended: completed" in followed

    row = hosts[0].task(task_id)
    assert (row["status"], row["host"]) == ("completed", "host1")
    local = hosts[1].home / "logs" / "tasks" / f"{task_id}.log"
    assert local.exists(), "host1 keeps its own file"
    assert not (hosts[2].home / "logs" / "tasks" / f"{task_id}.log").exists()
    whole = local.read_bytes()
    assert b"\xff\xfe" in whole
    with hosts[2].api() as api:
        assert api.get(f"/tasks/{task_id}/log").content == whole  # byte for byte, from the store
        assert api.get(f"/tasks/{task_id}/log", params={"offset": 20}).content == whole[20:]
    printed = hosts[2].ok("logs", task_id, "--no-timestamps")
    assert printed.splitlines()[1:11] == [f"line {i}" for i in range(5)] + ["not utf-8: \ufffd\ufffd"] + [
        f"line {i}" for i in range(5, 9)
    ]

    hosts[1].ok("stop")  # host1 is gone: its tasks' logs are still read from anywhere
    deadline = time.monotonic() + 60
    while (hosts[1].home / "manager.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hosts[2].ok("logs", task_id) == hosts[0].ok("logs", task_id) == whole.decode("utf-8", "replace")
