"""Tests for fleet.core.config: sources, ClearML compatibility, types, env, secrets."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from fleet.core.config import (
    Config,
    config_to_hocon,
    default_config_path,
    load_config,
    parse_config_string,
)
from fleet.core.errors import ConfigError

# The agent section of ClearML Agent's documented sample, plus api {} and sdk {}.
CLEARML_CONF = r"""
api {
    web_server: https://app.clear.ml
    api_server: https://api.clear.ml
    files_server: https://files.clear.ml
    credentials {
        "access_key" = "ABCDEFGHIJKLMNOP"
        "secret_key" = "s3cr3t/with+chars=="
    }
}
sdk {
    storage { cache { default_base_dir: "~/.clearml/cache" } }
    development { task_reuse_time_window_in_hours: 72.0, vcs_repo_detect_async: true }
}
agent {
    # Set GIT user/pass credentials (if user/pass are set, GIT protocol will be set to https)
    git_user=""
    git_pass=""
    git_host=""
    force_git_ssh_protocol: false
    # force_git_ssh_port: 0
    worker_id: ""
    worker_name: ""
    python_binary: ""
    # ignore_requested_python_version: true
    package_manager: {
       # supported options: pip, conda, poetry
       type: pip,
       # pip_version: "<20"
       system_site_packages: false,
       force_upgrade: false,
       extra_index_url: []
       conda_channels: ["pytorch", "conda-forge", "defaults", ]
       # priority_packages: ["cython", "numpy", "setuptools", ]
       torch_nightly: false,
    },
    venvs_dir = ~/.clearml/venvs-builds
    venvs_cache: {
       max_entries: 10
       free_space_threshold_gb: 2.0
       # path: ~/.clearml/venvs-cache
    },
    vcs_cache: {
    enabled: true,
    path: ~/.clearml/vcs-cache
    },
    # venv_update: {
    #     enabled: false,
    # },
    pip_download_cache {
    enabled: true,
    path: ~/.clearml/pip-download-cache
    },
    translate_ssh: true,
    reload_config: false,
    docker_pip_cache = ~/.clearml/pip-cache
    docker_apt_cache = ~/.clearml/apt-cache
    # extra_docker_arguments: ["--ipc=host", "-v", "/mnt/host/data:/mnt/data"]
    docker_force_pull: false
    default_docker: {
        image: "nvidia/cuda:10.1-cudnn7-runtime-ubuntu18.04"
        # arguments: ["--ipc=host"]
    }
    enable_task_env: false
    # cuda_version: 10.1
    hide_docker_command_env_vars {
       enabled: true
       extra_keys: []
    }
    # docker_container_name_format: "clearml-id-{task_id}-{rand_string:.8}"
}
"""

# ClearML documents every agent key of its sample: none may warn (issue 15).
UNMODELLED: set[str] = set()


def write(tmp_path: Path, text: str, name: str = "fleet.conf") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text), env={"HOME": str(tmp_path)})


def warned_keys(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The key paths named by fleet.core.config's warnings ("config agent.x: unknown key ...")."""
    return [
        r.getMessage().split()[1].rstrip(":")
        for r in caplog.records
        if r.name == "fleet.core.config" and r.levelno == logging.WARNING
    ]


def test_builtin_defaults_when_no_file(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert default_config_path(env) is None
    config = load_config(env=env)
    assert config == Config()
    assert config.path is None
    assert config.agent.package_manager.type == "uv"
    assert config.fleet.api.port == 8765
    assert config.agent.docker_container_name_format == "fleet-id-{task_id}-{rand_string:.8}"


def test_source_order(tmp_path: Path) -> None:
    home_file = write(tmp_path, "fleet.api.port: 1001")
    env_file = write(tmp_path, "fleet.api.port: 1002", "env.conf")
    explicit = write(tmp_path, "fleet.api.port: 1003", "explicit.conf")
    env = {"HOME": str(tmp_path)}
    assert default_config_path(env) == home_file
    assert load_config(env=env).fleet.api.port == 1001
    env["FLEET_CONFIG_FILE"] = str(env_file)
    assert default_config_path(env) == env_file
    assert load_config(env=env).fleet.api.port == 1002
    config = load_config(explicit, env=env)
    assert config.fleet.api.port == 1003
    assert config.path == explicit


@pytest.mark.parametrize("via_env", [False, True])
def test_missing_named_file_is_an_error(tmp_path: Path, via_env: bool) -> None:
    missing = tmp_path / "nope.conf"
    write(tmp_path, "")  # ~/fleet.conf exists but must not be used instead
    env = {"HOME": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"nope\.conf"):
        if via_env:
            load_config(env={**env, "FLEET_CONFIG_FILE": str(missing)})
        else:
            load_config(missing, env=env)


def test_clearml_conf_loads_unchanged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.core.config")
    path = write(tmp_path, CLEARML_CONF, "clearml.conf")
    config = load_config(path, env={})
    agent = config.agent
    assert agent.package_manager.type == "pip"
    assert agent.package_manager.conda_channels == (
        "pytorch",
        "conda-forge",
        "defaults",
    )
    assert agent.package_manager.extra_index_url == ()
    assert agent.venvs_dir == "~/.clearml/venvs-builds"  # "~" kept as written
    assert agent.vcs_cache.path == "~/.clearml/vcs-cache"
    assert agent.pip_download_cache.enabled is True
    assert agent.venvs_cache.free_space_threshold_gb == 2.0
    assert agent.default_docker.image == "nvidia/cuda:10.1-cudnn7-runtime-ubuntu18.04"
    assert agent.hide_docker_command_env_vars.extra_keys == ()
    assert config.fleet == Config().fleet
    assert config.path == path
    keys = warned_keys(caplog)
    assert sorted(keys) == sorted(UNMODELLED)  # one warning each; api/sdk silent


def test_unknown_object_key_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="fleet.core.config")
    load_text(tmp_path, "agent.no_such_block { enabled: false, x: 1 }\nfleet.foo_bar: 1")
    assert warned_keys(caplog) == ["agent.no_such_block", "fleet.foo_bar"]


def test_syntax_error_names_file_on_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "agent {\n  git_user: x\n  }}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message


def test_unresolved_substitution_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FLEET_NO_SUCH_VARIABLE"):
        load_text(tmp_path, "agent.git_user: ${FLEET_NO_SUCH_VARIABLE}")


def test_wrong_type_message_names_file_path_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "agent.package_manager.system_site_packages: maybe")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    key = "agent.package_manager.system_site_packages"
    assert str(info.value) == f"{path}: config {key}: expected a boolean, got 'maybe'"
    assert info.value.field == key


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        (
            "agent.venvs_cache.max_entries: 2.5",
            "agent.venvs_cache.max_entries",
            "integer",
        ),
        (
            "agent.venvs_cache.max_entries: true",
            "agent.venvs_cache.max_entries",
            "integer",
        ),
        ("agent.force_git_ssh_port: x", "agent.force_git_ssh_port", "integer"),
        ("fleet.api.port: 70000", "fleet.api.port", "between 0 and 65535, got 70000"),
        ("fleet.api.port: -1", "fleet.api.port", "between 0 and 65535"),
        ("fleet.metrics.interval: 0", "fleet.metrics.interval", "> 0"),
        ("fleet.api.max_body_mb: 0", "fleet.api.max_body_mb", "> 0 and <= 1024"),
        ("fleet.api.max_body_mb: NaN", "fleet.api.max_body_mb", "expected a number"),
        ("fleet.api.max_body_mb: 1e300", "fleet.api.max_body_mb", "> 0 and <= 1024"),
        ("fleet.poll_interval: -2", "fleet.poll_interval", "> 0"),
        ("fleet.stop_grace_seconds: -1", "fleet.stop_grace_seconds", ">= 0"),
        ("fleet.host_lease_seconds: 1", "fleet.host_lease_seconds", "> 1 and <= 86400"),
        ("fleet.host_lease_seconds: 1e300", "fleet.host_lease_seconds", "> 1 and <= 86400"),
        ("fleet.stop_grace_seconds: soon", "fleet.stop_grace_seconds", "number"),
        (
            "agent.package_manager.type: yarn",
            "agent.package_manager.type",
            "expected one of pip, uv, conda, poetry, got 'yarn'",
        ),
        ("agent.extra_docker_arguments: [[1]]", "agent.extra_docker_arguments", "list"),
        ("agent.worker_name: [a]", "agent.worker_name", "expected a string"),
        ("agent.docker_internal_mounts: [a]", "agent.docker_internal_mounts", "object"),
        ("agent.venvs_cache: 3", "agent.venvs_cache", "expected an object, got 3"),
        ("agent: true", "agent", "expected an object"),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text)
    assert info.value.field == key
    assert f"config {key}: " in str(info.value)
    assert fragment in str(info.value)


def test_secret_value_not_shown_in_type_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, "agent.git_pass: [hunter2]")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("false", False),
        ('"yes"', True),
        ('"no"', False),
        ("on", True),
        ("off", False),
        ('"1"', True),
        ('"0"', False),
        ("1", True),
        ("0", False),
    ],
)
def test_boolean_spellings(tmp_path: Path, raw: str, expected: bool) -> None:
    config = load_text(tmp_path, f"agent.docker_force_pull: {raw}")
    assert config.agent.docker_force_pull is expected


def test_conversions(tmp_path: Path) -> None:
    config = load_text(
        tmp_path,
        """
        agent {
          venvs_cache.free_space_threshold_gb: 3      # int accepted for a float
          package_manager.extra_index_url: "https://example.org/simple"
          extra_docker_arguments: ["--ipc=host", "-p", 8080]
          cuda_version: 11.8                            # HOCON number for a string
          docker_internal_mounts { sdk_cache: "/cache", "ssh_folder": /root/.ssh }
          worker_id: null                               # null keeps the default
          uptime: "17-20 TUE"
        }
        fleet { api.port: "9000", metrics.interval: 0.5, home: ~/fleet-home }
        """,
    )
    agent = config.agent
    assert agent.venvs_cache.free_space_threshold_gb == 3.0
    assert isinstance(agent.venvs_cache.free_space_threshold_gb, float)
    assert agent.package_manager.extra_index_url == ("https://example.org/simple",)
    assert agent.extra_docker_arguments == ("--ipc=host", "-p", "8080")
    assert agent.cuda_version == "11.8"
    assert dict(agent.docker_internal_mounts) == {
        "sdk_cache": "/cache",
        "ssh_folder": "/root/.ssh",
    }
    assert agent.worker_id == ""
    assert agent.uptime == ("17-20 TUE",)
    assert config.fleet.api.port == 9000
    assert config.fleet.metrics.interval == 0.5
    assert config.fleet.home == "~/fleet-home"


def test_uptime_and_downtime_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"set only one of agent\.uptime / agent\.downtime"):
        load_text(tmp_path, 'agent { uptime: ["8-20"], downtime: "20-8" }')


def test_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "agent { worker_id: file-id, worker_name: file-name }")
    assert load_config(path, env={}).agent.worker_id == "file-id"
    clearml = {"CLEARML_WORKER_ID": "cm-id", "CLEARML_WORKER_NAME": "cm-name"}
    config = load_config(path, env=clearml)
    assert (config.agent.worker_id, config.agent.worker_name) == ("cm-id", "cm-name")
    env = {
        **clearml,
        "FLEET_WORKER_ID": "f-id",
        "FLEET_WORKER_NAME": "f-name",
        "FLEET_API_TOKEN": "tok",
    }
    config = load_config(path, env=env)
    assert (config.agent.worker_id, config.agent.worker_name) == ("f-id", "f-name")
    assert config.fleet.api.token == "tok"
    defaults = load_config(env={"HOME": str(tmp_path / "empty"), "FLEET_WORKER_ID": "w"})
    assert defaults.agent.worker_id == "w"


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    config = load_text(tmp_path, 'agent.git_pass: "hunter2-pass"\nfleet.api.token: "tok-s3cret"')
    assert config.agent.git_pass == "hunter2-pass"
    assert config.fleet.api.token == "tok-s3cret"
    for text in (repr(config), str(config), repr(config.agent), str(config.fleet.api)):
        assert "hunter2-pass" not in text
        assert "tok-s3cret" not in text


def test_hocon_round_trip_with_awkward_strings(tmp_path: Path) -> None:
    nasty = 'pa"ss\\word $HOME ${X} # // é\ttab'
    base = Config()
    config = replace(
        base,
        agent=replace(
            base.agent,
            git_pass=nasty,
            docker_internal_mounts={"ssh_folder": "/root/.ssh", "a.b": "c"},
            extra_docker_arguments=("--ipc=host", nasty),
        ),
        fleet=replace(base.fleet, metrics=replace(base.fleet.metrics, interval=1e-3)),
    )
    path = write(tmp_path, config_to_hocon(config, header="test"))
    loaded = load_config(path, env={})
    assert loaded == replace(config, path=path)
    assert parse_config_string(config_to_hocon(Config())) == Config()
