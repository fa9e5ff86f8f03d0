"""Wake-up sockets nobody else can take (issue 12, item 6).

The attack: a worker's wake-up socket used to be an abstract-namespace name
derived from the home and the worker id, which any local user can compute
and bind first; the worker then crash-looped while ``up`` said it was
starting.  Now the socket lives in the owner-only home, and a name that
cannot be taken leaves the worker on its fallback poll instead of killing it.
"""

from __future__ import annotations

import hashlib
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.core.wakeups import Listener, socket_path, wake
from tests.conftest import Fleet

HOST = socket.gethostname()
SYSTEM_PYTHON = "/usr/bin/python3"

# Binds the name the old code derived, then says so and holds it until killed.
SQUAT = """
import hashlib, os, socket, sys, time
digest = hashlib.sha1(f"{sys.argv[1]}\\0{sys.argv[2]}".encode()).hexdigest()[:24]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(b"\\0fleet-" + digest.encode())
print("bound", os.getpid(), flush=True)
time.sleep(600)
"""


def _old_abstract_key(home: Path, worker_id: str) -> str:
    return f"{home.resolve()}\0{worker_id}"


@pytest.fixture
def squatter(fleet: Fleet) -> Iterator[subprocess.Popen[str]]:
    """Another local user (``nobody``) holding the old abstract name of ``<host>:gpu0``."""
    if os.geteuid() != 0 or shutil.which("runuser") is None or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs root, runuser and /usr/bin/python3 to act as another local user")
    fleet.home.mkdir()
    argv = [SYSTEM_PYTHON, "-c", SQUAT, str(fleet.home.resolve()), f"{HOST}:gpu0"]
    proc = subprocess.Popen(["runuser", "-u", "nobody", "--", *argv], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    said, pid = proc.stdout.readline().split()
    assert said == "bound"
    yield proc
    os.kill(int(pid), signal.SIGKILL)  # the squatter itself: runuser does not pass SIGKILL on
    proc.wait()
    proc.stdout.close()


def test_another_user_cannot_keep_a_worker_from_starting(fleet: Fleet, squatter: subprocess.Popen[str]) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    task = fleet.submit("q", "python", "-c", "print('ran')")
    fleet.ok("wait", task, "--timeout", "60")
    assert "ran" in fleet.ok("logs", task, "--no-timestamps")
    assert squatter.poll() is None  # the squatter still holds the old name: it no longer matters
    path = socket_path(fleet.home, f"{HOST}:gpu0")
    assert stat.S_ISSOCK(path.lstat().st_mode)  # woken by datagrams, not left to the poll
    assert "no wake-up socket" not in "".join(p.read_text() for p in (fleet.home / "logs" / "workers").iterdir())
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    # ``nobody`` can neither reach the socket nor put one in its place.
    probe = "import socket,sys; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'!', sys.argv[1])"
    tried = subprocess.run(
        ["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, "-c", probe, str(path)], capture_output=True, text=True
    )
    assert tried.returncode != 0 and "PermissionError" in tried.stderr, tried.stderr


def test_a_blocked_name_leaves_the_worker_polling(fleet: Fleet) -> None:
    path = socket_path(fleet.home, f"{HOST}:gpu0")
    path.mkdir(parents=True, mode=0o700)  # something that is not a socket sits on the name
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    task = fleet.submit("q", "python", "-c", "print('ran')")
    fleet.ok("wait", task, "--timeout", "60")  # picked up by the poll (poll_interval 2 s)
    assert path.is_dir()
    logs = "".join(p.read_text() for p in (fleet.home / "logs" / "workers").iterdir())
    assert "no wake-up socket" in logs and "falling back to polling" in logs


def _readable(listener: Listener, timeout: float = 5) -> bool:
    return select.select([listener], [], [], timeout)[0] == [listener]


def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    dead = Listener(tmp_path, "w1")
    dead.sock.close()  # died without removing its file
    assert socket_path(tmp_path, "w1").exists()
    listener = Listener(tmp_path, "w1")
    try:
        assert listener.path is not None
        wake(tmp_path, ["w1"])
        assert _readable(listener) and listener.drain() == 1
    finally:
        listener.close()
    assert not socket_path(tmp_path, "w1").exists()


def test_a_live_listener_is_left_alone(tmp_path: Path) -> None:
    first = Listener(tmp_path, "w1")
    second = Listener(tmp_path, "w1")  # same id twice: the second polls
    try:
        assert first.path is not None and second.path is None
        wake(tmp_path, ["w1"])
        assert _readable(first) and first.drain() == 1
        assert not _readable(second, 0.2) and second.drain() == 0
    finally:
        second.close()
        first.close()


def test_a_long_home_path_still_gets_a_socket(tmp_path: Path) -> None:
    home = tmp_path / ("h" * 120)
    assert len(str(socket_path(home, "w1"))) > 108
    listener = Listener(home, "w1")
    try:
        assert listener.path is not None
        wake(home, ["w1"])
        assert _readable(listener) and listener.drain() == 1
    finally:
        listener.close()


def test_old_name_is_not_used(tmp_path: Path) -> None:
    """The worker binds no abstract name any more, so a squatter there changes nothing."""
    digest = hashlib.sha1(_old_abstract_key(tmp_path, "w1").encode()).hexdigest()[:24]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as squat:
        squat.bind(b"\0fleet-" + digest.encode())
        listener = Listener(tmp_path, "w1")
        try:
            assert listener.path is not None
        finally:
            listener.close()
