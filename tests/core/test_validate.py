"""Names that reach the filesystem and the store; env masking."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fleet.core.errors import UsageError
from fleet.core.secrets import MASK, mask_env
from fleet.core.validate import env_name, queue_name, task_id, worker_id

GOOD: list[tuple[Callable[[str, str], str], str]] = [
    (task_id, "abcd"),
    (task_id, "0123456789abcdef0123456789abcdef"),
    (queue_name, "a"),
    (queue_name, "gpu-queue_1.x"),
    (queue_name, "Q" * 64),
    (worker_id, "host:gpu0,1"),
    (worker_id, "host:cpu:1"),
    (worker_id, "w" * 128),
    (env_name, "A"),
    (env_name, "_x1"),
    (env_name, "CUDA_VISIBLE_DEVICES"),
]
BAD: list[tuple[Callable[[str, str], str], str]] = [
    (task_id, "abc"),
    (task_id, "ABCD"),
    (task_id, "0" * 33),
    (task_id, "../etc"),
    (task_id, ""),
    (queue_name, ""),
    (queue_name, "-a"),
    (queue_name, ".hidden"),
    (queue_name, "a/b"),
    (queue_name, "a b"),
    (queue_name, "Q" * 65),
    (worker_id, ":x"),
    (worker_id, "a/b"),
    (worker_id, "w" * 129),
    (worker_id, ""),
    (env_name, "1A"),
    (env_name, "A-B"),
    (env_name, "A=B"),
    (env_name, ""),
]


@pytest.mark.parametrize(("check", "value"), GOOD, ids=[f"{c.__name__}-{v[:12]}" for c, v in GOOD])
def test_names_good(check: Callable[[str, str], str], value: str) -> None:
    assert check(value, "f") == value


@pytest.mark.parametrize(("check", "value"), BAD, ids=[f"{c.__name__}-{v[:12]}" for c, v in BAD])
def test_names_bad(check: Callable[[str, str], str], value: str) -> None:
    with pytest.raises(UsageError, match="invalid") as info:
        check(value, "f")
    assert info.value.field == "f"


TRAILING_NEWLINE: list[tuple[Callable[[str, str], str], str]] = [
    (task_id, "abcd\n"),
    (queue_name, "q\n"),
    (worker_id, "w\n"),
    (env_name, "A\n"),
]


@pytest.mark.parametrize(("check", "value"), TRAILING_NEWLINE, ids=[c.__name__ for c, _ in TRAILING_NEWLINE])
def test_names_refuse_trailing_newline(check: Callable[[str, str], str], value: str) -> None:
    with pytest.raises(UsageError):
        check(value, "f")


def test_mask_env() -> None:
    env = {"API_KEY": "k", "HF_TOKEN": "t", "db_password": "p", "PATH": "/bin", "MY_VAR": "m", "SEED": "1"}
    assert mask_env(env, frozenset({"MY_VAR"})) == {
        "API_KEY": MASK,
        "HF_TOKEN": MASK,
        "db_password": MASK,
        "PATH": "/bin",
        "MY_VAR": MASK,
        "SEED": "1",
    }
    assert mask_env(env)["MY_VAR"] == "m"
