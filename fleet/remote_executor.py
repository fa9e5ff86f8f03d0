#!/usr/bin/env python3
"""Run a fleet task here and report it to its manager: the remote executor.

The entry point of images built by ``fleetctl build --docker``.  Stdlib only
and a single file: it is copied into images that hold a bare Python >= 3.10
and nothing of fleet.

    FLEET_API_URL=http://manager:8765 python3 remote.py --task ID [--clone] [--worker NAME] -- COMMAND [ARGS...]

It asks the manager to start the task (``--clone``: a new clone of it) under
the worker id NAME (default ``<hostname>:image``) with the GPUs of
``NVIDIA_VISIBLE_DEVICES`` or ``CUDA_VISIBLE_DEVICES`` (see
:func:`visible_gpus`), runs COMMAND in its own process group, copies its
output to this process's stdout and to the task's log (posted every half
second, and at least every few seconds as a heartbeat that keeps the task's
lease), stops it on an abort, on the task's timeout or on SIGTERM/SIGINT
(SIGTERM to the group, SIGKILL after the manager's ``stop_grace_seconds``),
and reports how it ended.  Exit code: the command's (128 + N when killed by
signal N); 1 when the manager refuses the start, 2 on bad usage, 127 when
the command cannot be started.  A manager that stops answering mid-run does
not stop the command: output is kept (a few MiB at most) and posts are
retried with backoff.  ``FLEET_API_TOKEN``, when set, is sent as a bearer
token; it is never printed and not passed to the command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from types import FrameType
from typing import Any

LOG_EVERY_S = 0.5  # output is posted this often
HEARTBEAT_S = 5.0  # and an empty post at least this often (renews the lease)
POST_TIMEOUT_S = 10.0
MAX_BACKOFF_S = 30.0
MAX_BUFFER = 4 * 2**20  # output kept while the manager does not answer
MAX_POST = 256 * 1024  # bytes of output in one post
PARTIAL_WAIT_S = 2.0  # a line without its newline is sent after this long
FINISH_PATIENCE_S = 600.0  # how long the end is retried against a silent manager
TASK_RE = re.compile(r"[0-9a-fA-F]{4,32}")
WORKER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:,\-]{0,127}$")
EXIT_USAGE = 2
EXIT_REFUSED = 1
EXIT_NOT_FOUND = 127


def say(text: str) -> None:
    """One line of the runner's own, on stderr (the container log)."""
    sys.stderr.write(f"[fleet] {text}\n")
    sys.stderr.flush()


class ApiError(Exception):
    """The manager answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Unreachable(Exception):
    """No answer from the manager (refused, timed out, 5xx)."""


class Api:
    def __init__(self, url: str, token: str) -> None:
        base = url.strip().rstrip("/")
        self.base = base if base.endswith("/api/v1") else base + "/api/v1"
        self._token = token

    def post(self, path: str, body: dict[str, Any], timeout: float = POST_TIMEOUT_S) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        request = urllib.request.Request(
            self.base + path, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                data = json.loads(answer.read() or b"{}")
                return data if isinstance(data, dict) else {}
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                detail = json.loads(raw)
                message = str(detail.get("error") or detail) if isinstance(detail, dict) else str(detail)
            except ValueError:
                message = raw.decode("utf-8", "replace").strip()[:500] or str(exc.reason)
            if exc.code >= 500:
                raise Unreachable(f"HTTP {exc.code}: {message}") from None
            raise ApiError(exc.code, message) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(str(reason)) from None


def default_worker() -> str:
    host = re.sub(r"[^A-Za-z0-9_.,\-]", "-", socket.gethostname()).lstrip("_.,-")[:100] or "remote"
    return f"{host}:image"


def _gpu_list(raw: str) -> list[int] | None:
    parts = [p.strip() for p in raw.split(",")] if raw.strip() else []
    if not parts or not all(p.isdigit() for p in parts) or len(set(parts)) != len(parts):
        return None
    return [int(p) for p in parts]


def visible_gpus() -> list[int]:
    """The GPUs this executor was given, as the host numbers them: the NVIDIA
    runtime's ``NVIDIA_VISIBLE_DEVICES`` (``docker run --gpus device=0,1``)
    when it lists them, else ``CUDA_VISIBLE_DEVICES``, else none."""
    for name in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        gpus = _gpu_list(os.environ.get(name, ""))
        if gpus is not None:
            return gpus
    return []


class Output:
    """The command's output: copied to our stdout as it comes, and kept for the
    manager (bounded: the oldest bytes go first while it does not answer)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self._since = 0.0  # when the oldest unsent byte arrived
        self.dropped = 0
        self.thread = threading.Thread(target=self._read, name="output", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        fd = self._stream.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                return
            try:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            except (OSError, ValueError):
                pass
            with self._lock:
                if not self._buffer:
                    self._since = time.monotonic()
                self._buffer += data
                extra = len(self._buffer) - MAX_BUFFER
                if extra > 0:
                    del self._buffer[:extra]
                    self.dropped += extra

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def pending(self) -> bool:
        with self._lock:
            return bool(self._buffer) or bool(self.dropped)

    def take(self, final: bool) -> bytes:
        """Output to post now: whole lines (a partial one when it waited long
        enough, or at the end), at most MAX_POST bytes."""
        with self._lock:
            chunk = bytes(self._buffer[:MAX_POST])
            cut = chunk.rfind(b"\n") + 1
            if cut == 0 and (final or len(chunk) >= MAX_POST or time.monotonic() - self._since >= PARTIAL_WAIT_S):
                cut = len(chunk)
            chunk = chunk[:cut]
            if self.dropped:
                chunk = (
                    f"[fleet] {self.dropped} bytes of output dropped (the manager did not answer)\n".encode() + chunk
                )
                self.dropped = 0
            del self._buffer[:cut]
            if self._buffer:
                self._since = time.monotonic()
            return chunk

    def give_back(self, chunk: bytes) -> None:
        """A post that did not go through: its output goes first next time."""
        with self._lock:
            self._buffer[:0] = chunk
            extra = len(self._buffer) - MAX_BUFFER
            if extra > 0:
                del self._buffer[:extra]
                self.dropped += extra


class Signals:
    def __init__(self) -> None:
        self.count = 0
        self.last = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.last = signum


class Runner:
    def __init__(self, api: Api, task_id: str, attempt: int, grace: float, timeout: float | None) -> None:
        self.api = api
        self.task_id = task_id
        self.attempt = attempt
        self.grace = grace
        self.deadline = time.monotonic() + timeout if timeout else None
        self.timeout = timeout
        self.stopped = False
        self.timed_out = False
        self.reason = ""
        self.ended_by_manager = False
        self.kill_at: float | None = None
        self.lost_since: float | None = None
        self.retry_at = 0.0
        self.failures = 0
        self.output: Output | None = None

    # -- talking to the manager ------------------------------------------------
    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Post; None when the manager did not answer (told once, retried with backoff)."""
        try:
            answer = self.api.post(f"/tasks/{self.task_id}/{path}", body)
        except Unreachable as exc:
            self.failures += 1
            if self.lost_since is None:
                self.lost_since = time.monotonic()
                say(f"manager unreachable at {self.api.base} ({exc}); the task goes on, output is kept and retried")
            self.retry_at = time.monotonic() + min(MAX_BACKOFF_S, 0.5 * 2 ** min(self.failures, 10))
            return None
        if self.lost_since is not None:
            say(f"manager answers again (after {time.monotonic() - self.lost_since:.0f}s)")
        self.lost_since = None
        self.failures = 0
        self.retry_at = 0.0
        return answer

    def send_log(self, output: Output, final: bool = False) -> dict[str, Any] | None:
        chunk = output.take(final)
        try:
            answer = self._post("log", {"attempt": self.attempt, "text": chunk.decode("utf-8", "replace")})
        except ApiError as exc:
            if exc.status == 409:
                self.ended_by_manager = True
                say(f"the manager ended this attempt: {exc.message}")
            else:
                say(f"the manager refused output (HTTP {exc.status}): {exc.message}")
            return None
        if answer is None:
            output.give_back(chunk)
        return answer

    # -- the command -----------------------------------------------------------
    def stop(self, proc: subprocess.Popen[bytes], why: str) -> None:
        if self.kill_at is None:
            self.reason = self.reason or why
            say(f"stopping the command: {why}")
            signal_group(proc.pid, signal.SIGTERM)
            self.kill_at = time.monotonic() + self.grace

    def watch(self, proc: subprocess.Popen[bytes], output: Output, signals: Signals) -> None:
        last_post = 0.0
        seen = 0
        exited_at: float | None = None
        while not (proc.poll() is not None and output.done):
            now = time.monotonic()
            if proc.returncode is not None and exited_at is None:
                exited_at = now
            if signals.count > seen:
                seen = signals.count
                self.stopped = True
                self.stop(proc, f"{signal.Signals(signals.last).name} to the remote executor")
                if seen > 1:
                    signal_group(proc.pid, signal.SIGKILL)
            if self.kill_at is None and self.deadline is not None and now >= self.deadline:
                self.timed_out = True
                assert self.timeout is not None
                self.stop(proc, f"timeout after {self.timeout:g}s")
            if exited_at is not None and now - exited_at >= 1.0 and self.kill_at is None:
                self.stop(proc, "the command exited; ending what it left running")  # they hold the pipe
            if self.kill_at is not None and now >= self.kill_at:
                signal_group(proc.pid, signal.SIGKILL)
            due = now - last_post >= LOG_EVERY_S and (output.pending() or now - last_post >= HEARTBEAT_S)
            if due and now >= self.retry_at and not self.ended_by_manager:
                last_post = now
                answer = self.send_log(output)
                if answer is not None and answer.get("abort") and self.kill_at is None:
                    self.stopped = True
                    self.stop(proc, str(answer["abort"]))
                if self.ended_by_manager:
                    self.stopped = True
                    self.stop(proc, "the manager no longer counts this attempt as running")
            time.sleep(0.05)

    def finish(self, exit_code: int | None) -> None:
        """Flush the output and record the end; retried while the manager is silent."""
        if self.ended_by_manager:
            return
        give_up = time.monotonic() + FINISH_PATIENCE_S
        body = {
            "attempt": self.attempt,
            "exit_code": exit_code,
            "stopped": self.stopped,
            "timed_out": self.timed_out,
            "reason": self.reason[:2000],
        }
        while time.monotonic() < give_up:
            time.sleep(max(0.0, self.retry_at - time.monotonic()))
            if self.ended_by_manager:
                return
            if self.output is not None and self.output.pending():
                self.send_log(self.output, final=True)
                continue
            try:
                answer = self._post("finish", body)
            except ApiError as exc:
                say(f"the manager did not record the end (HTTP {exc.status}): {exc.message}")
                return
            if answer is not None:
                reason = f" ({answer.get('status_reason')})" if answer.get("status_reason") else ""
                say(f"task {answer.get('id', self.task_id)} {answer.get('status', '?')}{reason}")
                return
        say(f"gave up telling the manager how the task ended after {FINISH_PATIENCE_S:g}s")


def signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="remote.py", description="Run a fleet task here and report it to the manager at FLEET_API_URL."
    )
    parser.add_argument("--task", required=True, help="the task id (or a unique prefix)")
    parser.add_argument("--clone", action="store_true", help="run a new clone of the task; the original is untouched")
    parser.add_argument("--worker", default=None, help="worker id to run as (default <hostname>:image)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    args = parser.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.command:
        parser.error("a command is required: -- COMMAND [ARGS...]")
    if not TASK_RE.fullmatch(args.task):
        parser.error(f"--task {args.task!r}: expected a task id (4 to 32 hex digits)")
    if args.worker is not None and not WORKER_RE.fullmatch(args.worker):
        parser.error(f"--worker {args.worker!r}: expected letters, digits and '_.:,-' (starting with one of the first)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    url = os.environ.get("FLEET_API_URL", "").strip()
    if not url:
        say("FLEET_API_URL is not set: it must name the fleet manager (e.g. http://host:8765)")
        return EXIT_USAGE
    api = Api(url, os.environ.get("FLEET_API_TOKEN", ""))
    signals = Signals()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signals)
    worker = args.worker or default_worker()
    body = {"worker": worker, "gpus": visible_gpus(), "clone": bool(args.clone)}
    try:
        started = api.post(f"/tasks/{args.task}/start", body)
    except ApiError as exc:
        say(f"cannot start task {args.task}: {exc.message} (HTTP {exc.status})")
        if "GPU(s)" in exc.message:
            say("give the GPUs with docker run --gpus device=0,1 (or -e CUDA_VISIBLE_DEVICES=0,1)")
        return EXIT_REFUSED
    except Unreachable as exc:
        say(f"cannot start task {args.task}: no answer from the manager at {api.base} ({exc})")
        return EXIT_REFUSED
    task = started.get("task") or {}
    task_id, attempt = str(task.get("id") or args.task), int(started.get("attempt") or task.get("attempt") or 0)
    clone = f" (clone of {task.get('parent')})" if args.clone else ""
    say(f"running task {task_id} attempt {attempt}{clone} as {worker}")
    grace = float(started.get("stop_grace_seconds") or 10.0)
    timeout = started.get("timeout")
    runner = Runner(api, task_id, attempt, grace, float(timeout) if timeout else None)
    env = {k: v for k, v in os.environ.items() if k != "FLEET_API_TOKEN"}
    env.update(FLEET_TASK_ID=task_id, PYTHONUNBUFFERED="1")
    try:
        proc = subprocess.Popen(
            args.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        runner.reason = f"could not start {args.command[0]}: {exc.strerror or exc}"
        say(runner.reason)
        runner.finish(None)
        return EXIT_NOT_FOUND
    assert proc.stdout is not None
    runner.output = Output(proc.stdout)
    runner.watch(proc, runner.output, signals)
    rc = proc.returncode
    runner.finish(rc)
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main())
