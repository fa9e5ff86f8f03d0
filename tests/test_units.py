"""Pure units: GPU specs, claims, queue order, task logs, names, wake-ups,
argv rewriting and exit descriptions."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fleet.cli.main import expand_multi
from fleet.errors import Conflict, UsageError
from fleet.gpus import parse_gpu_list, resolve_gpus
from fleet.notify import Listener, wake
from fleet.nvml import GpuUnit, Nvml
from fleet.procs import describe_exit
from fleet.scheduler.claims import UpRequest, plan_up
from fleet.scheduler.order import QueueOrder
from fleet.secrets import MASK, mask_env
from fleet.tasklog import MAX_PARTIAL, TaskLog, stamp, strip_stamp
from fleet.validate import env_name, queue_name, task_id, worker_id
from tests.factories import live_worker

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")


class FakeNvml(Nvml):
    """Stands in for NVML with ``count`` GPUs (None: no driver).  A GPU cannot
    exist on the machine these tests run on, so this is the only way to reach
    the code paths of a host that has one."""

    def __init__(self, count: int | None) -> None:
        super().__init__()
        self.count = count

    @property
    def available(self) -> bool:
        return self.count is not None

    def device_count(self) -> int:
        return self.count or 0

    def units(self) -> list[GpuUnit]:
        return [GpuUnit(i, i, f"GPU-fake-{i}", False) for i in range(self.count or 0)]


# -- GPU specs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0", [0]),
        ("7", [7]),
        ("0,1", [0, 1]),
        ("0-3", [0, 1, 2, 3]),
        ("0-3,6", [0, 1, 2, 3, 6]),
        ("1-1", [1]),
        ("3,1", [3, 1]),
        (" 0 , 2 ", [0, 2]),
        ("\t0-1\n", [0, 1]),
        ("0-1023", list(range(1024))),
    ],
)
def test_parse_gpu_list_good(spec: str, expected: list[int]) -> None:
    assert parse_gpu_list(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("3-1", "goes down"),
        ("a", "not an index"),
        ("0,0", "twice"),
        ("0-2,1", "twice"),
        ("", "expected GPU indices"),
        ("   ", "expected GPU indices"),
        ("-1", "not an index"),
        ("0,,1", "not an index"),
        ("0,", "not an index"),
        ("0 1", "not an index"),
        ("0 - 3", "not an index"),
        ("1.5", "not an index"),
        ("all", "not an index"),
        ("0-1024", "more than 1024"),
    ],
)
def test_parse_gpu_list_bad(spec: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse_gpu_list(spec)
    assert info.value.field == "gpus"


def test_parse_gpu_list_refuses_huge_range_quickly() -> None:
    code = "from fleet.gpus import parse_gpu_list\ntry:\n    parse_gpu_list('0-99999999')\nexcept Exception as e:\n    print(type(e).__name__)"
    try:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3)
    except subprocess.TimeoutExpired:
        pytest.fail("parse_gpu_list('0-99999999') ran for more than 3 s")
    assert result.stdout.strip() == "UsageError"


def test_resolve_gpus_without_driver_gives_logical_gpus() -> None:
    indices, warnings = resolve_gpus("0-1", FakeNvml(None))
    assert indices == [0, 1]
    assert len(warnings) == 1 and "logical" in warnings[0] and "0,1" in warnings[0]
    with pytest.raises(UsageError, match="no NVIDIA driver"):
        resolve_gpus("all", FakeNvml(None))


def test_resolve_gpus_with_driver() -> None:
    assert resolve_gpus("all", FakeNvml(4)) == ([0, 1, 2, 3], [])
    assert resolve_gpus(" ALL ", FakeNvml(2)) == ([0, 1], [])
    assert resolve_gpus("1,3", FakeNvml(4)) == ([1, 3], [])
    with pytest.raises(UsageError, match=r"2 GPU.*no GPU 2"):
        resolve_gpus("0-2", FakeNvml(2))
    with pytest.raises(UsageError, match="no GPUs"):
        resolve_gpus("all", FakeNvml(0))


def test_real_nvml_degrades_without_raising() -> None:
    nvml = Nvml()
    if os.path.exists("/dev/nvidiactl"):  # a GPU host: NVML must agree with itself
        assert nvml.device_count() == len(nvml.devices())
        return
    assert nvml.available is False
    assert nvml.error
    assert nvml.device_count() == 0
    assert nvml.devices() == []
    assert nvml.available is False  # asked twice, still no exception


# -- claims -----------------------------------------------------------------------------------


def test_plan_up_new_gpu_worker() -> None:
    plan = plan_up(UpRequest(queues=["a", "b"], gpus="0-1"), [], "h", FakeNvml(4))
    assert [(w.id, w.gpus, w.queues) for w in plan.new] == [("h:gpu0,1", [0, 1], ["a", "b"])]
    assert plan.existing == [] and plan.warnings == []


def test_plan_up_conflict_names_owner() -> None:
    live = [live_worker("h:gpu0,1", [0, 1], ["a"])]
    with pytest.raises(Conflict, match=r"GPU 1 is already claimed by worker h:gpu0,1"):
        plan_up(UpRequest(queues=["b"], gpus="1-2"), live, "h", FakeNvml(4))


def test_plan_up_same_spec_is_idempotent() -> None:
    live = [live_worker("h:gpu0", [0], ["a", "b"])]
    plan = plan_up(UpRequest(queues=["a", "b"], gpus="0"), live, "h", FakeNvml(None))
    assert plan.new == [] and plan.existing == live


def test_plan_up_other_spec_same_id_conflicts() -> None:
    live = [live_worker("h:gpu0", [0], ["a"])]
    with pytest.raises(Conflict, match="already runs"):
        plan_up(UpRequest(queues=["b"], gpus="0"), live, "h", FakeNvml(None))
    with pytest.raises(Conflict, match="already runs"):
        plan_up(UpRequest(queues=["a"], gpus="0", order_fairness=True), live, "h", FakeNvml(None))


def test_plan_up_cpu_worker_ids() -> None:
    first = plan_up(UpRequest(queues=["a"], cpu_only=True), [], "h", FakeNvml(4)).new[0]
    assert (first.id, first.gpus) == ("h:cpu", None)
    live = [live_worker("h:cpu", None, ["a"])]
    assert plan_up(UpRequest(queues=["b"], cpu_only=True), live, "h", FakeNvml(4)).new[0].id == "h:cpu:1"
    live.append(live_worker("h:cpu:1", None, ["b"]))
    assert plan_up(UpRequest(queues=["c"], cpu_only=True), live, "h", FakeNvml(4)).new[0].id == "h:cpu:2"
    again = plan_up(UpRequest(queues=["b"], cpu_only=True), live, "h", FakeNvml(4))
    assert [w.id for w in again.existing] == ["h:cpu:1"] and again.new == []


def test_plan_up_without_gpus_or_driver_is_cpu() -> None:
    plan = plan_up(UpRequest(queues=["a"]), [], "h", FakeNvml(None))
    assert plan.new[0].id == "h:cpu" and plan.new[0].gpus is None
    assert "CPU-only" in plan.warnings[0]
    assert plan_up(UpRequest(queues=["a"]), [], "h", FakeNvml(2)).new[0].id == "h:gpu0,1"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (UpRequest(queues=["q=4"], gpus="0"), "asks for up to 4 GPUs but the pool has 1"),
        (UpRequest(queues=["a", "b", "a"], gpus="0"), "given twice"),
        (UpRequest(queues=[], gpus="0"), "at least one"),
        (UpRequest(queues=["bad name"], gpus="0"), "invalid queue name"),
        (UpRequest(queues=["a"], gpus="0", cpu_only=True), "exclude"),
        (UpRequest(queues=["a"], gpus="1-0"), "goes down"),
    ],
)
def test_plan_up_refusals(request_: UpRequest, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        plan_up(request_, [], "h", FakeNvml(None))


def test_plan_up_worker_id_override() -> None:
    plan = plan_up(UpRequest(queues=["a"], gpus="0"), [], "h", FakeNvml(None), worker_id_override="trainer-1")
    assert plan.new[0].id == "trainer-1" and plan.new[0].gpus == [0]
    with pytest.raises(UsageError, match="invalid worker id") as info:
        plan_up(UpRequest(queues=["a"], gpus="0"), [], "h", FakeNvml(None), worker_id_override="bad/id")
    assert info.value.field == "agent.worker_id"


# -- queue order ---------------------------------------------------------------------------------


def test_queue_order_strict() -> None:
    order = QueueOrder(["a", "b", "c"], fairness=False)
    order.served("a")
    order.served("b")
    assert order.current() == ["a", "b", "c"]


def test_queue_order_fairness_takes_turns() -> None:
    order = QueueOrder(["a", "b", "c"], fairness=True)
    order.served("a")
    assert order.current() == ["b", "c", "a"]
    order.served("c")
    assert order.current() == ["b", "a", "c"]
    order.served("zzz")
    assert order.current() == ["b", "a", "c"]
    order.current().clear()  # a copy
    assert order.current() == ["b", "a", "c"]


# -- task logs -------------------------------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_task_log_stamps_and_joins_partial_lines(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "t.log", 1 << 20)
    log.feed(b"hel")
    log.feed(b"lo\nwor")
    assert [strip_stamp(line) for line in _lines(log.path)] == ["hello"]
    log.feed(b"ld\r\nthree\r\n")
    log.feed(b"no newline")
    log.note("ended")
    log.close()
    lines = _lines(log.path)
    assert all(STAMP.match(line) for line in lines)
    assert [strip_stamp(line) for line in lines] == ["hello", "world", "three", "[fleet] ended", "no newline"]
    assert log.tail == ["hello", "world", "three", "no newline"]
    assert log.size == log.path.stat().st_size


def test_task_log_appends_across_attempts(tmp_path: Path) -> None:
    first = TaskLog(tmp_path / "t.log", 1 << 20)
    first.feed(b"one\n")
    first.close()
    second = TaskLog(tmp_path / "t.log", 1 << 20)
    assert second.size == (tmp_path / "t.log").stat().st_size
    second.feed(b"two\n")
    second.close()
    assert [strip_stamp(line) for line in _lines(tmp_path / "t.log")] == ["one", "two"]


def test_task_log_long_partial_line_is_written(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "t.log", 1 << 20)
    log.feed(b"x" * (MAX_PARTIAL + 1))
    assert [len(strip_stamp(line)) for line in _lines(log.path)] == [MAX_PARTIAL + 1]
    log.close()


def test_task_log_cap_writes_one_note(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "t.log", 1 << 20)
    line = b"y" * 999 + b"\n"
    for _ in range(1500):
        log.feed(line)
    log.note("still written")
    log.feed(line)
    log.close()
    lines = _lines(log.path)
    notes = [x for x in lines if "log limit" in x]
    assert len(notes) == 1 and "log limit of 1 MB reached" in notes[0]
    assert lines[-1].endswith("[fleet] still written")
    assert log.path.stat().st_size <= (1 << 20) + 300
    assert sum(1 for x in lines if x.endswith("y")) == (1 << 20) // (len(line) + 25)


def test_task_log_cap_note_names_fractional_limit(tmp_path: Path) -> None:
    log = TaskLog(tmp_path / "t.log", 512 * 1024)
    log.feed(b"z" * 600_000 + b"\n")
    log.close()
    assert "log limit of 0.5 MB" in log.path.read_text()


def test_strip_stamp() -> None:
    assert strip_stamp("2026-11-25T20:51:31.123Z text here") == "text here"
    assert strip_stamp(f"{stamp(0.5)} x") == "x"
    assert stamp(0.5) == "1970-01-01T00:00:00.500Z"
    assert strip_stamp("plain line") == "plain line"
    assert strip_stamp("2026-11-25T20:51:31Z short stamp") == "2026-11-25T20:51:31Z short stamp"
    assert strip_stamp("") == ""


# -- names -------------------------------------------------------------------------------------------

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


# -- wake-ups --------------------------------------------------------------------------------------------


def test_wake_reaches_listener(tmp_path: Path) -> None:
    listener = Listener(tmp_path, "w1")
    try:
        assert listener.drain() == 0
        wake(tmp_path, ["w1", "w1"])
        readable, _, _ = select.select([listener], [], [], 5)
        assert readable == [listener]
        assert listener.drain() == 2
        assert listener.drain() == 0
    finally:
        listener.close()


def test_wake_without_listener_is_silent(tmp_path: Path) -> None:
    wake(tmp_path, [])
    wake(tmp_path, ["nobody", "w1"])
    other = Listener(tmp_path / "other-home", "w1")  # same worker id, another FLEET_HOME
    try:
        wake(tmp_path, ["w1"])
        assert select.select([other], [], [], 0.2)[0] == []
        assert other.drain() == 0
    finally:
        other.close()


# -- argv rewriting --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ("up --queue a b --gpus 0", "up --queue a --queue b --gpus 0"),
        ("up --queue a", "up --queue a"),
        ("up --gpus 0 --queue a b c", "up --gpus 0 --queue a --queue b --queue c"),
        ("up --queue a b --order-fairness", "up --queue a --queue b --order-fairness"),
        ("up --uptime 1-2 3-4 --queue a", "up --uptime 1-2 --uptime 3-4 --queue a"),
        ("submit --env A=1 B=2 -- cmd --queue x", "submit --env A=1 --env B=2 -- cmd --queue x"),
        ("submit --queue q -- python --env A=1 B=2", "submit --queue q -- python --env A=1 B=2"),
        ("submit --env A=1 python x.py", "submit --env A=1 python x.py"),
        ("submit --name n --env A=1 B=2 python x.py", "submit --name n --env A=1 --env B=2 python x.py"),
        ("--config F up --queue a b", "--config F up --queue a --queue b"),
        ("--config up up --queue a b", "--config up up --queue a --queue b"),
        ("--config=F up --queue a b", "--config=F up --queue a --queue b"),
        ("tasks --queue a b", "tasks --queue a b"),
        ("--version", "--version"),
        ("", ""),
    ],
)
def test_expand_multi(argv: str, expected: str) -> None:
    assert expand_multi(argv.split()) == expected.split()


# -- processes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0, "exit code 0"),
        (3, "exit code 3"),
        (255, "exit code 255"),
        (-signal.SIGKILL, "killed by SIGKILL"),
        (-signal.SIGTERM, "killed by SIGTERM"),
        (-200, "killed by signal 200"),
    ],
)
def test_describe_exit(code: int, text: str) -> None:
    assert describe_exit(code) == text
