"""The folders of a task that runs as its submitter (fleet/worker/userarea.py),
as root: made and handed over so that no user can plant code for another or
swap a folder root acts on; root reads a user's file without following links."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.core.config import Config, parse_config_string
from fleet.core.home import Home
from fleet.worker.runas import StepAsUserFailed, call_as, run_as
from fleet.worker.userarea import USER_FOLDERS, docker_folder, ensure_area, read_user_file

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to hand folders to another user")

NOBODY = pwd.getpwnam("nobody").pw_uid if os.geteuid() == 0 else -1


@pytest.fixture
def spot() -> Iterator[Path]:
    """A folder any user can pass (pytest's own are under a 0700 one)."""
    root = Path(tempfile.mkdtemp(prefix="fleet-userarea-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _setup(tmp_path: Path, users_dir: str = "") -> tuple[Home, Config]:
    tmp_path.mkdir(exist_ok=True)
    tmp_path.chmod(0o711)
    home = Home(tmp_path / "home")
    home.root.mkdir()
    home.root.chmod(0o711)  # whatever umask an earlier test left this process (Home.ensure sets 0077)
    setting = f', users_dir: "{users_dir}"' if users_dir else ""
    config = parse_config_string(f"fleet {{ run_as_submitter: true{setting} }}", tmp_path / "fleet.conf")
    return home, config


def _mode(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, stat.S_IMODE(st.st_mode)


def test_the_area_is_roots_and_its_folders_the_users(spot: Path) -> None:
    home, config = _setup(spot)
    who = run_as(config, "nobody")
    assert who is not None
    area = ensure_area(home, config, who)
    assert area.root == home.root / "users" / f"u{NOBODY}"
    assert _mode(area.root.parent) == _mode(area.root) == _mode(area.docker) == (0, 0o711)
    for name in USER_FOLDERS:
        assert _mode(area.root / name) == (NOBODY, 0o700)
    for name in ("pip", "uv", "poetry"):
        assert _mode(area.docker / name) == (NOBODY, 0o700)
    assert _mode(area.docker_venvs) == (0, 0o700)
    assert ensure_area(home, config, who) == area  # again: checked, unchanged

    # a folder that is not the user's (here: a link, root's) is refused, never used
    (area.root / "cache").rmdir()
    (area.root / "cache").symlink_to("/etc")
    with pytest.raises(PermissionError, match="cache is not a folder of nobody's"):
        ensure_area(home, config, who)


def test_a_users_dir_of_someone_else_or_out_of_reach_is_refused(spot: Path) -> None:
    theirs = spot / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, -1)
    home, config = _setup(spot, str(theirs))
    who = run_as(config, "nobody")
    assert who is not None
    with pytest.raises(PermissionError, match="not a folder of this manager's user"):
        ensure_area(home, config, who)

    locked = spot / "locked"
    locked.mkdir(mode=0o700)
    home, config = _setup(spot / "second", str(locked / "users"))
    with pytest.raises(PermissionError, match=f"nobody cannot reach .*{locked} is mode 0700.*fleet.users_dir"):
        ensure_area(home, config, who)


def test_a_docker_folder_replaces_whatever_was_there_without_following_it(spot: Path) -> None:
    home, config = _setup(spot)
    who = run_as(config, "nobody")
    assert who is not None
    area = ensure_area(home, config, who)
    precious = spot / "precious"
    precious.mkdir()
    (precious / "keep").write_text("x")
    (area.docker / "t1").symlink_to(precious)
    folder = docker_folder(area, "t1")
    assert _mode(folder) == (NOBODY, 0o700) and not folder.is_symlink() and not any(folder.iterdir())
    assert (precious / "keep").read_text() == "x"
    (folder / "old").write_text("an earlier attempt's")
    assert not any(docker_folder(area, "t1").iterdir())


def test_root_reads_a_users_file_only_when_it_is_a_plain_file(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a" * 100)
    assert read_user_file(tmp_path / "plain", 10) == "a" * 10
    (tmp_path / "link").symlink_to("/etc/hostname")
    with pytest.raises(OSError):
        read_user_file(tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError, match="not a plain file"):
        read_user_file(tmp_path / "fifo")  # without a writer, and without waiting for one


def test_a_step_runs_in_a_child_that_has_become_the_user(tmp_path: Path) -> None:
    config = parse_config_string("fleet { run_as_submitter: true }", tmp_path / "fleet.conf")
    who = run_as(config, "nobody")
    assert who is not None

    def ids() -> list[int]:
        try:
            os.setuid(0)
        except PermissionError:
            return [os.getuid(), os.geteuid(), os.getgid(), *os.getgroups()]
        return [-1]

    assert call_as(who, ids) == [NOBODY, NOBODY, who.gid, *who.groups]
    assert os.getuid() == 0  # this process is as it was

    with open(tmp_path / "roots", "w") as held:  # a descriptor of root's (the docker socket's, say)

        def sees_it() -> bool:
            try:
                os.fstat(held.fileno())
            except OSError:
                return False
            return True

        assert call_as(who, sees_it) is False

    def fails() -> None:
        raise ValueError("the step's own words")

    with pytest.raises(StepAsUserFailed, match="ValueError: the step's own words"):
        call_as(who, fails)

    def dies() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(StepAsUserFailed, match="ended early \\(killed by SIGKILL\\)"):
        call_as(who, dies)
