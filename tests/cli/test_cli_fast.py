"""fleetctl for people and scripts (issue 16 items 1 and 5): a client command
loads no server library, tables fit 80 columns with short task ids that every
command takes back as prefixes, and ``--wide`` prints everything."""

from __future__ import annotations

import importlib
import json
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import click
import pytest

from fleet.cli import output
from fleet.cli.commands import COMMANDS, load
from fleet.cli.output import Col
from fleet.core.errors import ConfigError
from tests.conftest import Fleet

# What a command that only talks to the manager must not import (issue 13 item 6, issue 16 item 1):
# the server's libraries, and what fleetctl replaced to start fast (httpx by http.client, the
# parsed config by fleet/cli/client_config.py's cache).
HEAVY = (
    *("uvicorn", "fastapi", "starlette", "apscheduler", "psutil", "sqlite_utils", "docker", "pydantic"),
    *("rich", "pyhocon", "pyparsing", "httpx", "fleet.manager.daemon", "fleet.store", "fleet.api", "fleet.core.config"),
)

# Runs fleetctl in this process and prints which of HEAVY it loaded.
PROBE = f"""
import sys
from fleet.cli.main import main
rc = main(sys.argv[1:])
heavy = {HEAVY!r}
loaded = [m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy)]
print("LOADED=" + ",".join(sorted(loaded)), file=sys.stderr)
sys.exit(rc)
"""

MODULES = (
    "cmd_up",
    "cmd_daemon",
    "cmd_workers",
    "cmd_submit",
    "cmd_tasks",
    "cmd_queues",
    "cmd_exec",
    "cmd_report",
    "cmd_gpus",
)


def _probe(fleet: Fleet, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=fleet.root, env=fleet.env, capture_output=True, text=True, timeout=60
    )
    line = next(li for li in result.stderr.splitlines() if li.startswith("LOADED="))
    return result, [m for m in line.removeprefix("LOADED=").split(",") if m]


def test_client_commands_load_no_server_library(fleet: Fleet) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    task = fleet.submit("q", "true")
    assert fleet.cli("wait", task, "--timeout", "60").returncode == 0
    for args in (
        ["submit", "--queue", "q", "--", "/bin/true"],
        ["tasks"],
        ["status"],
        ["queues"],
        ["show", task[:8]],
        ["logs", task[:8]],
        ["wait", task[:8]],
        ["gpu", "list"],
        ["report", "--by", "queue"],
        ["--help"],
        ["submit", "--help"],
    ):
        result, loaded = _probe(fleet, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert loaded == [], (args, loaded)
    # the probe does see a heavy module when one is loaded: `up` imports the manager
    result, loaded = _probe(fleet, "up", "--gpus", "1", "--queue", "q")
    assert result.returncode == 0, result.stderr
    assert "fleet.manager.daemon" in loaded


def test_fleetctl_help_lists_each_command_from_its_registry_entry() -> None:
    """``fleetctl --help`` lists commands without importing them: the registry's
    one-line help and hidden flag must be the command's own, and every command
    of every module must be in the registry."""
    defined: dict[str, click.Command] = {}
    for name in MODULES:
        for command in importlib.import_module(f"fleet.cli.{name}").COMMANDS:
            defined[command.name or ""] = command
    defined["init"] = importlib.import_module("fleet.cli.init_cmd").init
    assert set(defined) == set(COMMANDS)
    for name, entry in COMMANDS.items():
        command = load(name)
        assert command is defined[name]
        assert (entry.short_help, entry.hidden) == (command.get_short_help_str(10_000), command.hidden), name


def test_a_table_fits_80_columns_and_never_cuts_a_fixed_cell() -> None:
    cols = [Col("ID", fixed=True), Col("NAME"), Col("STATUS", fixed=True), Col("WHEN (CET)", fixed=True), Col("WHY")]
    rows = [
        ["0123abcd", "n" * 120, "completed", "2026-11-25 21:00", "r" * 200],
        ["4567ef01", "short", "queued", "21:00:02", ""],
    ]
    lines = output.render("Tasks", cols, rows, 80)
    assert all(len(line) <= 80 for line in lines), lines
    assert len(lines) == 4  # title, header, two rows: one line each
    assert "completed" in lines[2] and "2026-11-25 21:00" in lines[2] and lines[2].startswith("0123abcd")
    assert "…" in lines[2] and "n" * 120 not in lines[2]
    assert "short" in lines[3]
    wide = output.render("Tasks", cols, rows, None)
    assert "n" * 120 in wide[2] and "r" * 200 in wide[2]


LONG_NAME = "a-very-long-task-name-" + "x" * 80
LONG_QUEUE = "q" + "u" * 63  # the longest queue name


def test_tables_fit_80_columns_with_long_names(fleet: Fleet) -> None:
    fleet.up("--cpu-only", "--queue", LONG_QUEUE, "--create-queue")
    fleet.ok("queue", "tag", LONG_QUEUE, "t" * 60)
    task = fleet.submit(LONG_QUEUE, "python", "-c", "raise SystemExit(3)", opts=("--name", LONG_NAME))
    assert fleet.cli("wait", task, "--timeout", "60").returncode == 1
    fleet.env["COLUMNS"] = "80"
    tables = {
        "tasks": fleet.ok("tasks"),
        "queues": fleet.ok("queues"),
        "gpu list": fleet.ok("gpu", "list"),
        "report": fleet.ok("report", "--by", "queue"),
        "show": fleet.ok("show", task),
    }
    status = fleet.ok("status")
    for command, out in tables.items():
        # show prints its values in full; its attempts table fits
        lines = out.split("Attempts", 1)[1].splitlines() if command == "show" else out.splitlines()
        assert all(len(line) <= 80 for line in lines), (command, out)
    # status: its tables fit (the manager's address and config path above them are printed whole)
    status_tables = status.split("\nWorkers\n", 1)[1]
    assert all(len(line) <= 80 for line in status_tables.splitlines()), status
    row = next(line for line in tables["tasks"].splitlines() if line.startswith(task[:8]))
    assert task not in row and "failed" in row.split() and "…" in row
    assert LONG_NAME not in tables["tasks"]
    # --wide: everything in full
    wide = fleet.ok("tasks", "--wide")
    assert task in wide and LONG_NAME in wide and LONG_QUEUE in wide
    assert LONG_QUEUE in fleet.ok("queues", "--wide") and "t" * 60 in fleet.ok("status", "--wide")
    # --json is unchanged: full ids, ISO UTC times
    listed = json.loads(fleet.ok("tasks", "--json"))["tasks"][0]
    assert listed["id"] == task and listed["name"] == LONG_NAME and listed["created_at"].endswith("Z")


def _create(fleet: Fleet) -> str:
    with fleet.api() as api:
        body = {"command": ["true"], "working_dir": str(fleet.root), "queue": None}
        task_id: str = api.post("/tasks", json=body).raise_for_status().json()["id"]
        return task_id


def test_every_task_command_takes_a_unique_prefix(fleet: Fleet) -> None:
    fleet.up("--cpu-only", "--queue", "q", "--create-queue")
    fleet.ok("queue", "create", "idle")  # no worker serves it
    done = fleet.submit("q", "echo", "hello")
    assert fleet.ok("wait", done[:8], "--timeout", "60").split()[:2] == [done, "completed"]
    assert json.loads(fleet.ok("show", done[:8], "--json"))["id"] == done
    assert "hello" in fleet.ok("logs", done[:8], "--no-timestamps")
    clone = fleet.ok("clone", done[:6]).strip()
    assert len(clone) == 32 and clone != done
    created = _create(fleet)
    assert fleet.ok("enqueue", created[:8], "--queue", "idle").strip() == f"{created} queued in idle"
    assert fleet.ok("dequeue", created[:8]).strip() == f"{created} created"
    fleet.ok("enqueue", created[:5], "--queue", "idle")
    assert fleet.ok("abort", created[:8]).strip() == f"{created} stopped"
    # a prefix that names no task, one too short, and one that names two: exit 2, one line naming it
    ids = {done, clone, created}
    unused = next(p for p in (f"{n:04x}" for n in range(65536)) if not any(t.startswith(p) for t in ids))
    for args, words in (
        (("show", unused), f"task {unused} does not exist"),
        (("logs", unused), f"task {unused} does not exist"),
        (("abort", "abc"), "expected 4-32 hex characters"),
    ):
        result = fleet.cli(*args)
        assert result.returncode == 2 and words in result.stderr and len(result.stderr.splitlines()) == 1, result
    seen = {t[:4]: t for t in ids}
    while True:  # about 300 created tasks until two share their first 4 characters
        extra = _create(fleet)
        if extra[:4] in seen:
            break
        seen[extra[:4]] = extra
    for command in ("show", "abort", "dequeue", "clone", "wait"):
        result = fleet.cli(command, extra[:4])
        assert result.returncode == 2 and "ambiguous" in result.stderr, (command, result)


@pytest.mark.parametrize("iso", ["2026-11-25T21:00:02.766Z", "2026-07-01T08:30:00Z"])
def test_times_for_people_are_local_with_the_zone(iso: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from fleet.cli import when

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        assert when.header("CREATED") == "CREATED (CET)" or when.header("CREATED") == "CREATED (CEST)"
        shown = when.full(iso)
        assert shown.endswith((" CET", " CEST")) and ("22:00:02" in shown or "10:30:00" in shown)
        assert when.cell(iso).startswith(iso[:10])  # not today: the date stays
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_client_settings_are_cached_by_the_config_file_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet.cli.client_config import client_settings

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FLEET_API_TOKEN", raising=False)
    conf = tmp_path / "fleet.conf"
    conf.write_text('fleet { home: "/h/one", api { token: "t1" } }\n')
    first = client_settings(str(conf))
    assert (first.home, first.token, first.path) == ("/h/one", "t1", conf)
    (cached,) = (tmp_path / "cache" / "fleet").iterdir()
    assert stat.S_IMODE(cached.stat().st_mode) == 0o600 and "t1" in cached.read_text()
    assert client_settings(str(conf)).home == "/h/one"  # from the cache ...
    cached.write_text(cached.read_text().replace("/h/one", "/h/cached"))
    assert client_settings(str(conf)).home == "/h/cached"  # ... really
    conf.write_text('fleet { home: "/h/two" }\n')  # a changed file is parsed again
    assert (client_settings(str(conf)).home, client_settings(str(conf)).token) == ("/h/two", "")
    monkeypatch.setenv("FLEET_API_TOKEN", "from-env")
    assert client_settings(str(conf)).token == "from-env"
    # not cached: a substitution (it depends on the environment), a file that warns, a bad file
    monkeypatch.setenv("SOME_HOME", "/h/env")
    conf.write_text("fleet { home: ${SOME_HOME} }\n")
    assert client_settings(str(conf)).home == "/h/env"
    monkeypatch.setenv("SOME_HOME", "/h/env2")
    assert client_settings(str(conf)).home == "/h/env2"
    conf.write_text('fleet { home: "/h/three", nosuchkey: 1 }\n')
    assert client_settings(str(conf)).home == "/h/three"
    assert "/h/three" not in cached.read_text()
    conf.write_text("fleet { home: \n")
    with pytest.raises(ConfigError, match="cannot parse config"):
        client_settings(str(conf))


def _serve_once(path: Path, answer: bytes) -> threading.Thread:
    """A unix socket at ``path`` that reads one request head and writes ``answer``."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        with conn, server:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=1\r\nlo\r\n0\r\n\r\n", b"hello"),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello", b"hello"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhello", None),  # cut short
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nhel", None),
        (b"SSH-2.0-OpenSSH\r\n\r\n", None),
    ],
)
def test_the_http_exchange_reads_each_body_framing(tmp_path: Path, answer: bytes, body: bytes | None) -> None:
    from fleet.cli.http11 import ProtocolError, Target, exchange

    path = tmp_path / "s.sock"
    thread = _serve_once(path, answer)
    target = Target("fleet.sock", 80, uds=str(path))
    if answer.startswith(b"SSH"):
        with pytest.raises(ProtocolError, match="not an HTTP answer"):
            exchange(target, "GET", "/x", {}, None, 10)
        return
    response = exchange(target, "GET", "/x", {}, None, 10)
    try:
        assert response.status == 200
        if body is None:
            with pytest.raises(ProtocolError, match="ended"):
                response.read()
        else:
            assert response.read() == body
    finally:
        response.close()
        thread.join(10)
