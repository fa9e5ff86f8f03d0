"""Secrets by name and by value (issue 12, item 9).

``DATABASE_URL=postgres://u:pw@...`` and ``HF_AUTH`` used to be shown in
clear by the API and ``show``, and ``submit --env K=V`` put values in ``ps``
while the CLI ran.  Now one module (:mod:`fleet.core.secrets`) decides what is
secret everywhere, URLs with credentials are masked whatever their name, and
``submit --env NAME`` takes the value from the submitter's environment.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from fleet.core.secrets import MASK, is_secret, is_secret_name, mask_args, mask_env, mask_urls, unmask_env
from fleet.worker.docker.args import ContainerSpec
from tests.conftest import CONFIG, Fleet

DB_URL = "postgres://app:db-PLANTED-71c2@db.internal:5432/prod"
DB_URL_SHOWN = f"postgres://app:{MASK}@db.internal:5432/prod"
CACHE_URL = "redis://:cache-PLANTED-5e0a@cache:6379/0"  # secret by value only
HF_AUTH = "hfauth-PLANTED-93d1"
MINE = "mine-PLANTED-0b44"  # an extra key from the config
FROM_ENV = "fromenv-PLANTED-c6f8"  # given as --env NAME, from the submitter's environment
PLANTED = ("db-PLANTED-71c2", "cache-PLANTED-5e0a", HF_AUTH, MINE)


@pytest.mark.parametrize(
    "name",
    [
        "HF_AUTH",
        "DATABASE_URL",
        "OPENAI_API_KEY",
        "AZURE_STORAGE_KEY",
        "SIGNING_KEY",
        "HF_HUB_TOKEN",
        "HF_TOKEN",
        "GITHUB_TOKEN",
        "db_password",
        "MY_PASSWD",
        "PASSPHRASE",
        "CLIENT_SECRET",
        "GCP_CREDENTIALS",
        "KEY",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["PATH", "PWD", "HOME", "SEED", "TOKENIZERS_PARALLELISM", "KEYBOARD", "MONKEY"])
def test_plain_names(name: str) -> None:
    assert not is_secret_name(name)


def test_values_with_credentials_are_masked_whatever_their_name() -> None:
    env = {"DATABASE_URL": DB_URL, "CACHE": CACHE_URL, "REPO": "https://ghp_abc@github.com/o/r", "HOME": "/x"}
    env["PIP_INDEX"] = "https://user:p%40ss@pypi.example/simple"
    masked = mask_env(env)
    assert masked["DATABASE_URL"] == MASK  # secret by name: all of it
    assert masked["CACHE"] == f"redis://:{MASK}@cache:6379/0"
    assert masked["REPO"] == f"https://{MASK}@github.com/o/r"
    assert masked["PIP_INDEX"] == f"https://user:{MASK}@pypi.example/simple"
    assert masked["HOME"] == "/x"
    assert mask_urls("postgres://u:p@ss@h/db") == f"postgres://u:{MASK}@h/db"  # an unescaped @ leaks nothing
    assert is_secret("CACHE", CACHE_URL) and not is_secret("HOME", "/x")
    assert mask_env({"MINE": "v"}, ["MINE"]) == {"MINE": MASK}


def test_an_edited_environment_keeps_the_real_values_it_still_shows_masked() -> None:
    source = {"DATABASE_URL": DB_URL, "CACHE": CACHE_URL, "MINE": MINE, "SEED": "1"}
    shown = mask_env(source, ["MINE"])
    edited = {**shown, "SEED": "2", "NEW": "n"}
    assert unmask_env(edited, source, ["MINE"]) == {**source, "SEED": "2", "NEW": "n"}
    retyped = {**shown, "CACHE": "redis://:other@cache:6379/0"}  # typed anew: taken as typed
    assert unmask_env(retyped, source)["CACHE"] == "redis://:other@cache:6379/0"


def test_docker_command_masks_by_value() -> None:
    spec = ContainerSpec("img", ["python"], "n", {}, {"CACHE": CACHE_URL, "PLAIN": "p"}, {}, "/")
    shown = spec.shown()
    assert f"CACHE=redis://:{MASK}@cache:6379/0" in shown and "cache-PLANTED" not in shown and "PLAIN=p" in shown
    assert mask_args(["-e", f"HF_AUTH={HF_AUTH}", f"--env=MINE={MINE}"], ["MINE"]) == [
        "-e",
        f"HF_AUTH={MASK}",
        f"--env=MINE={MASK}",
    ]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


# The task prints a digest of each variable: the test sees that it got the real
# values without any of them reaching the log.
PRINT_DIGESTS = (
    "import hashlib, os\n"
    "for k in ('DATABASE_URL', 'CACHE', 'HF_AUTH', 'MINE', 'FROM_ENV'):\n"
    "    print(k, hashlib.sha256(os.environ.get(k, '').encode()).hexdigest()[:16])\n"
)


def _assert_real_values(log: str) -> None:
    for key, value in (("DATABASE_URL", DB_URL), ("CACHE", CACHE_URL), ("HF_AUTH", HF_AUTH), ("MINE", MINE)):
        assert f"{key} {_digest(value)}" in log, log


def test_secrets_by_value_never_leave_and_clones_keep_them(fleet: Fleet) -> None:
    (fleet.root / "fleet.conf").write_text(CONFIG + 'agent { hide_docker_command_env_vars { extra_keys: ["MINE"] } }')
    fleet.env["FROM_ENV"] = FROM_ENV
    fleet.up("--gpus", "0", "--queue", "q", "--create-queue")
    opts = ("--env", f"DATABASE_URL={DB_URL}", "--env", f"CACHE={CACHE_URL}", "--env", f"HF_AUTH={HF_AUTH}")
    argv = ("submit", "--queue", "q", *opts, "--env", f"MINE={MINE}", "--env", "FROM_ENV", "--json")
    submitted = fleet.cli(*argv, "--", "python", "-c", PRINT_DIGESTS)
    assert submitted.returncode == 0, submitted.stderr
    assert FROM_ENV not in " ".join(argv)  # what ps would have shown: the name only
    task = json.loads(submitted.stdout)
    fleet.ok("wait", task["id"], "--timeout", "60")
    log = fleet.ok("logs", task["id"], "--no-timestamps")
    _assert_real_values(log)
    assert f"FROM_ENV {_digest(FROM_ENV)}" in log
    with fleet.api() as api:
        shown = api.get(f"/tasks/{task['id']}").raise_for_status().json()
        listed = api.get("/tasks").raise_for_status().text
        # The page's "clone with edited environment": the env as shown, one value changed.
        edited = {**shown["env"], "SEED": "7"}
        clone = api.post(f"/tasks/{task['id']}/clone", json={"queue": "q", "env": edited}).raise_for_status().json()
    assert shown["env"] == {
        "DATABASE_URL": MASK,
        "CACHE": f"redis://:{MASK}@cache:6379/0",
        "HF_AUTH": MASK,
        "MINE": MASK,
        "FROM_ENV": FROM_ENV,  # a plain name: the value is the task's, shown as any other
    }
    fleet.ok("wait", clone["id"], "--timeout", "60")
    _assert_real_values(fleet.ok("logs", clone["id"], "--no-timestamps"))
    seen = {
        "api": json.dumps(shown) + listed + json.dumps(clone),
        "show": fleet.ok("show", task["id"]) + fleet.ok("show", task["id"], "--json"),
        "tasks": fleet.ok("tasks", "--json"),
        "logs": "".join(p.read_text(errors="replace") for p in (fleet.home / "logs").rglob("*.log")),
    }
    for where, text in seen.items():
        for planted in PLANTED:
            assert planted not in text, (where, planted)


def test_env_name_without_a_value_must_be_set(fleet: Fleet) -> None:
    fleet.env.pop("NOT_SET_HERE", None)
    result = fleet.cli("submit", "--queue", "q", "--env", "NOT_SET_HERE", "--", "true")
    assert result.returncode == 2
    assert "NOT_SET_HERE" in result.stderr and "not set" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    bad = fleet.cli("submit", "--queue", "q", "--env", "=x", "--", "true")
    assert bad.returncode == 2 and "'=x'" in bad.stderr, bad.stderr
