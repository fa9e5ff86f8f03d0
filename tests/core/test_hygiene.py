"""Small things a shared machine needs (issue 12, item 10): tasks get a
normal umask while fleet's own files stay owner-only, a home left writable by
others is tightened, and text set by users never reaches a terminal raw."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from fleet.cli.output import printable
from tests.conftest import Fleet

WRITE = "import os, sys; open(sys.argv[1], 'w').write('x'); os.mkdir(sys.argv[1] + '.d')"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_tasks_get_a_normal_umask_and_fleet_files_stay_private(fleet: Fleet, tmp_path: Path) -> None:
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    plain = fleet.submit("q", "python", "-c", WRITE, str(tmp_path / "plain"))
    setup = tmp_path / "setup.sh"
    setup.write_text("echo set up\n")
    prepared = fleet.submit("q", "python", "-c", WRITE, str(tmp_path / "prepared"), opts=("--setup-script", str(setup)))
    fleet.ok("wait", plain, prepared, "--timeout", "120")
    for name in ("plain", "prepared"):  # run directly, and exec'd by fleet.worker.prepare
        assert _mode(tmp_path / name) == 0o644, name
        assert _mode(tmp_path / f"{name}.d") == 0o755, name
    home = fleet.home
    assert _mode(home / "fleet.db") == 0o600 and _mode(home / "logs" / "tasks" / f"{plain}.log") == 0o600
    assert _mode(home / "logs" / "tasks") == 0o700 and _mode(home / "work") == 0o700


def test_an_open_home_is_tightened_at_start(fleet: Fleet) -> None:
    logs = fleet.home / "logs"
    logs.mkdir(parents=True)
    fleet.home.chmod(0o777)
    logs.chmod(0o777)
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    assert _mode(fleet.home) == 0o700 and _mode(logs) == 0o700
    text = (logs / "manager.log").read_text()
    assert f"{fleet.home} was mode 0777 (writable by others); tightened to 0700" in text
    assert f"{logs} was mode 0777 (writable by others); tightened to 0700" in text


def test_an_owner_only_home_is_left_as_it_is(fleet: Fleet) -> None:
    fleet.home.mkdir()
    fleet.home.chmod(0o750)  # readable by a group on purpose: not writable, so not ours to change
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    assert _mode(fleet.home) == 0o750
    assert "tightened" not in (fleet.home / "logs" / "manager.log").read_text()


NAME = "ok\x1b[31mRED\rfake"
TAG = "t\x1b]0;title\x07"


def test_control_characters_are_printed_escaped(fleet: Fleet) -> None:
    fleet.env["COLUMNS"] = "400"  # one line per row
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    fleet.ok("queue", "tag", "q", TAG)
    fails = "import sys; print('boom\\x1b[2J'); sys.exit(3)"
    task = fleet.submit("q", "python", "-c", fails, opts=("--name", NAME))
    assert fleet.cli("wait", task, "--timeout", "60").returncode == 1
    outputs = {
        "tasks": fleet.ok("tasks"),
        "show": fleet.ok("show", task),
        "queues": fleet.ok("queues"),
        "status": fleet.ok("status"),
    }
    for command, out in outputs.items():
        assert "\x1b" not in out and "\r" not in out and "\x07" not in out, (command, out)
    for command in ("tasks", "show"):
        assert r"ok\x1b[31mRED\rfake" in outputs[command], outputs[command]
        assert r"boom\x1b[2J" in outputs[command], outputs[command]
    for command in ("queues", "status"):
        assert r"t\x1b]0;title\x07" in outputs[command], outputs[command]
    # --json keeps the text as it is, for scripts
    assert json.loads(fleet.ok("show", task, "--json"))["name"] == NAME


def test_printable_escapes_controls_and_bidi_overrides_only() -> None:
    assert printable("ok\x1b[31mRED\rfake\t\x7f\x9b\u202eé ✓") == r"ok\x1b[31mRED\rfake\t\x7f\x9b\u202eé ✓"
    assert printable("two\nlines\x07", keep_newlines=True) == "two\nlines\\x07"
    assert printable("plain [bold]text[/bold]") == "plain [bold]text[/bold]"
