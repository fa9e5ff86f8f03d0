"""The pure rules of running a task as its submitter: which docker arguments a
task of another user may bring, what its containers run as, and the config its
preparation sees (its own caches, none of fleet's secrets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.core.config import parse_config_string
from fleet.worker.runas import RunAs, container_identity, unsafe_docker_argument
from fleet.worker.userarea import for_user

WHO = RunAs("alice", 1001, 1001, (1001, 27, 44), "/home/alice")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["-e", "A=1", "--env=B=2", "--shm-size", "8g", "--ipc=private", "--network", "none"],
        ["--cpus", "2", "-m", "4g", "--pids-limit", "100", "--tmpfs", "/scratch", "--read-only", "--rm"],
        ["--label", "x=y", "-w", "/work", "--entrypoint", "python", "--cap-drop", "NET_RAW"],
        ["--network=host", "--net", "bridge", "--ipc", "shareable", "--init", "--hostname", "box"],
    ],
)
def test_docker_arguments_that_give_nothing_more_are_allowed(args: list[str]) -> None:
    assert unsafe_docker_argument(args) is None


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["-v", "/:/host"], "-v"),
        (["--volume=/var/run/docker.sock:/var/run/docker.sock"], "--volume"),
        (["--mount", "type=bind,src=/,dst=/host"], "--mount"),
        (["--privileged"], "--privileged"),
        (["--cap-add", "SYS_ADMIN"], "--cap-add"),
        (["--device", "/dev/sda"], "--device"),
        (["-u", "0"], "-u"),
        (["--user=root"], "--user"),
        (["--group-add", "docker"], "--group-add"),
        (["--security-opt", "seccomp=unconfined"], "--security-opt"),
        (["--pid=host"], "--pid"),
        (["--userns", "host"], "--userns"),
        (["--ipc", "host"], "--ipc host"),
        (["--network", "container:other"], "--network container:other"),
        (["--env-file", "/etc/shadow"], "--env-file"),
        (["--sysctl", "kernel.x=1"], "--sysctl"),
        (["-p", "80:80"], "-p"),
        (["--gpus", "all"], "--gpus"),
        (["--volumes-from", "other"], "--volumes-from"),
        (["-e", "A=1", "--runtime", "runc"], "--runtime"),
        (["image-name"], "'image-name'"),
    ],
)
def test_docker_arguments_that_could_give_more_are_named(args: list[str], named: str) -> None:
    why = unsafe_docker_argument(args)
    assert why is not None and why.startswith(named)


def test_containers_run_as_the_user_with_no_way_back_up() -> None:
    admin = {"security_opt": ["label=disable"], "cap_add": ["SYS_PTRACE"], "privileged": True, "mem_limit": 1}
    out = container_identity(WHO, admin)
    assert out["user"] == "1001:1001" and out["group_add"] == ["27", "44"]
    assert out["security_opt"] == ["label=disable", "no-new-privileges"]
    assert out["cap_drop"] == ["ALL"] and "cap_add" not in out and "privileged" not in out
    assert out["mem_limit"] == 1 and admin["cap_add"] == ["SYS_PTRACE"]  # the admin's dict is left as it was


def test_another_users_task_is_prepared_with_its_own_caches_and_none_of_fleets_secrets(tmp_path: Path) -> None:
    config = parse_config_string(
        """
        fleet { api { token: "tok-secret", secret_key: "key-secret" }, store { url: "postgresql://u:pw@h/db" } }
        agent {
          git_user: "fleetbot", git_pass: "git-secret", venvs_dir: "/big/builds"
          venvs_cache { path: "/big/venvs", max_entries: 3 }, vcs_cache { path: "/big/vcs" }
          pip_download_cache { path: "/big/pip" }, docker_pip_cache: "/big/dpip", docker_apt_cache: "/big/apt"
          package_manager { type: pip, extra_index_url: ["https://idx/simple"] }
        }
        """,
        tmp_path / "fleet.conf",
    )
    theirs = for_user(config)
    agent = theirs.agent
    assert (agent.git_user, agent.git_pass) == ("", "")
    assert (theirs.fleet.api.token, theirs.fleet.api.secret_key, theirs.fleet.store.url) == ("", "", "")
    assert agent.venvs_cache.path == agent.vcs_cache.path == agent.pip_download_cache.path == ""
    assert agent.docker_pip_cache == agent.docker_apt_cache == "" and agent.venvs_dir == "~/.fleet/venvs-builds"
    assert agent.venvs_cache.max_entries == 3 and agent.package_manager.type == "pip"  # the rest is the config's
    assert "git-secret" not in repr(theirs) and "tok-secret" not in str(theirs.fleet.api)
