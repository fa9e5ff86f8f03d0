"""Tests for ``fleetctl init``: flags, prompts, never overwriting, round trip."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fleet.cli.init_cmd import init
from fleet.core.config import load_config

REPO = Path(__file__).resolve().parents[2]


def run(args: list[str], input: str | None = None, home: Path | None = None) -> Result:
    env: dict[str, str | None] = {"FLEET_CONFIG_FILE": None}
    if home is not None:
        env["HOME"] = str(home)
    return CliRunner(env=env).invoke(init, args, input=input)


def test_non_interactive_writes_loadable_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "fleet.conf"
    args = [
        "--config",
        str(target),
        "--non-interactive",
        "--git-user",
        "alice",
        "--git-pass",
        "s3cret",
        "--package-manager",
        "poetry",
        "--api-port",
        "9100",
        "--home",
        "~/fleet-home",
        "--worker-name",
        "box1",
        "--extra-index-url",
        "https://a.example/simple",
        "--extra-index-url",
        "https://b.example/simple",
    ]
    result = run(args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"Wrote {target}"
    assert "s3cret" not in result.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    config = load_config(target, env={})
    assert config.agent.git_user == "alice"
    assert config.agent.git_pass == "s3cret"
    assert config.agent.worker_name == "box1"
    assert config.agent.package_manager.type == "poetry"
    assert config.agent.package_manager.extra_index_url == (
        "https://a.example/simple",
        "https://b.example/simple",
    )
    assert config.fleet.api.port == 9100
    assert config.fleet.home == "~/fleet-home"
    assert "agent {" in target.read_text() and "fleet {" in target.read_text()


def test_non_interactive_defaults(tmp_path: Path) -> None:
    target = tmp_path / "fleet.conf"
    result = run(["--config", str(target), "--non-interactive"])
    assert result.exit_code == 0, result.output
    assert "Git user" not in result.output and "[uv]" not in result.output  # no prompts
    config = load_config(target, env={})
    assert config.agent.package_manager.type == "uv"
    assert config.fleet.api.port == 8765
    assert config.agent.git_pass == ""


@pytest.mark.parametrize(
    "password",
    ['p"q', "back\\slash", "dollar$HOME${X}", "hash#not-a-comment", "a b // c é"],
)
def test_password_round_trips(tmp_path: Path, password: str) -> None:
    target = tmp_path / "fleet.conf"
    result = run(
        [
            "--config",
            str(target),
            "--non-interactive",
            "--git-user",
            "u",
            "--git-pass",
            password,
        ]
    )
    assert result.exit_code == 0, result.output
    assert load_config(target, env={}).agent.git_pass == password


def test_interactive_prompts(tmp_path: Path) -> None:
    target = tmp_path / "fleet.conf"
    answers = 'bob\nhunter2"$#\nconda\n9000\nhttps://idx.example/simple\n'
    result = run(["--config", str(target)], input=answers)
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output  # the password is never echoed
    assert "password=********" in result.output
    config = load_config(target, env={})
    assert config.agent.git_user == "bob"
    assert config.agent.git_pass == 'hunter2"$#'
    assert config.agent.package_manager.type == "conda"
    assert config.fleet.api.port == 9000
    assert config.agent.package_manager.extra_index_url == ("https://idx.example/simple",)


def test_flags_pre_answer_prompts(tmp_path: Path) -> None:
    target = tmp_path / "fleet.conf"
    result = run(
        [
            "--config",
            str(target),
            "--package-manager",
            "pip",
            "--api-port",
            "8000",
            "--git-user",
            "",
        ],
        input="\n",
    )
    assert result.exit_code == 0, result.output
    assert "Package manager" not in result.output and "API port" not in result.output
    assert "Git password" not in result.output  # no user, no password question
    config = load_config(target, env={})
    assert (config.agent.package_manager.type, config.fleet.api.port) == ("pip", 8000)


def test_empty_answers_take_defaults(tmp_path: Path) -> None:
    target = tmp_path / "fleet.conf"
    result = run(["--config", str(target)], input="")
    assert result.exit_code == 0, result.output
    config = load_config(target, env={})
    assert (config.agent.package_manager.type, config.fleet.api.port) == ("uv", 8765)


def test_bad_interactive_answer_exits_2(tmp_path: Path) -> None:
    target = tmp_path / "fleet.conf"
    result = run(["--config", str(target)], input="\nyarn\n")
    assert result.exit_code == 2
    assert "'yarn'" in result.stderr and "pip, uv, conda, poetry" in result.stderr
    assert not target.exists()


def test_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "fleet.conf"
    target.write_text("agent { git_user: keep }\n")
    os.utime(target, (1_000_000, 1_000_000))
    before = target.stat().st_mtime_ns
    result = run(["--config", str(target), "--non-interactive", "--git-user", "new"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"fleetctl init: {target} exists; not overwriting (edit it or pass --config NEW_PATH)"
    ]
    assert target.read_text() == "agent { git_user: keep }\n"
    assert target.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--package-manager", "yarn"], ["'yarn'", "pip, uv, conda, poetry"]),
        (["--api-port", "70000"], ["'70000'", "between 0 and 65535"]),
        (["--api-port", "http"], ["'http'", "integer"]),
    ],
)
def test_bad_flag_values_exit_2(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    target = tmp_path / "fleet.conf"
    result = run(["--config", str(target), "--non-interactive", *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    for fragment in fragments:
        assert fragment in lines[0]
    assert not target.exists()


def test_default_target_from_env_then_home(tmp_path: Path) -> None:
    env_target = tmp_path / "from-env.conf"
    result = CliRunner(env={"FLEET_CONFIG_FILE": str(env_target), "HOME": str(tmp_path)}).invoke(
        init, ["--non-interactive"]
    )
    assert result.exit_code == 0, result.output
    assert env_target.exists()
    result = run(["--non-interactive"], home=tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "fleet.conf").exists()


def _init_argv(target: Path, *args: str) -> list[str]:
    """``init --config TARGET ARGS`` as a process of its own (the real entry, not click's runner)."""
    return [sys.executable, "-c", "from fleet.cli.init_cmd import init; init()", "--config", str(target), *args]


def _run_init(
    target: Path, env: dict[str, str], *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _init_argv(target, *args),
        input=input,
        capture_output=True,
        text=True,
        env=env,
        cwd=target.parent,
        timeout=60,
        check=False,
    )


def test_real_subprocess_interactive(tmp_path: Path) -> None:
    target = tmp_path / "fleet.conf"
    env = {k: v for k, v in os.environ.items() if k != "FLEET_CONFIG_FILE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = _run_init(target, env, input='carol\nsecret\\$#"x\n\n9200\n\n')
    assert proc.returncode == 0, proc.stderr
    assert "secret" not in proc.stdout + proc.stderr
    assert "password=********" in proc.stdout
    assert proc.stdout.splitlines()[-1] == f"Wrote {target}"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    config = load_config(target, env={})
    assert config.agent.git_user == "carol"
    assert config.agent.git_pass == 'secret\\$#"x'
    assert config.agent.package_manager.type == "uv"
    assert config.fleet.api.port == 9200
    assert config.agent.package_manager.extra_index_url == ()
    again = _run_init(target, env, "--non-interactive")
    assert again.returncode == 1
    assert "exists; not overwriting" in again.stderr


def _expect(fd: int, needle: str, seen: list[str], timeout: float = 30.0) -> None:
    """Read the pty until ``needle`` shows up in what the child printed."""
    import select
    import time

    deadline = time.monotonic() + timeout
    while needle not in "".join(seen):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no {needle!r} in {''.join(seen)!r}")
        seen.append(os.read(fd, 4096).decode(errors="replace"))


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
def test_terminal_prompts_hide_the_password(tmp_path: Path) -> None:
    import pty

    target = tmp_path / "fleet.conf"
    env = {k: v for k, v in os.environ.items() if k != "FLEET_CONFIG_FILE"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        _init_argv(target),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=tmp_path,
        start_new_session=True,  # no controlling terminal: getpass uses the pty on stdin
    )
    os.close(slave)
    seen: list[str] = []
    transcript: list[str] = []
    try:
        for prompt, answer in [
            ("Git user", "dave"),
            ("Git password", "tty-s3cret"),
            ("Package manager", "nope"),
            ("Package manager", "pip"),
            ("API port", ""),
            ("Extra index URL", ""),
        ]:
            _expect(master, prompt, seen)
            transcript.extend(seen)
            seen.clear()
            os.write(master, answer.encode() + b"\n")
        _expect(master, "Wrote", seen)
        transcript.extend(seen)
        assert proc.wait(timeout=30) == 0
        output = "".join(transcript)
        assert "tty-s3cret" not in output  # not echoed by the terminal nor printed
        assert "password=********" in output
        assert "'nope'" in output  # a bad answer is refused and asked again
    finally:
        proc.kill()
        os.close(master)
    config = load_config(target, env={})
    assert (config.agent.git_user, config.agent.git_pass) == ("dave", "tty-s3cret")
    assert (config.agent.package_manager.type, config.fleet.api.port) == ("pip", 8765)
