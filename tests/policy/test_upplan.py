"""The plan of an ``up``: worker ids, GPU claims, refusals."""

from __future__ import annotations

import dataclasses

import pytest

from fleet.core.errors import Conflict, UsageError
from fleet.policy.upplan import UpRequest, plan_up
from tests.factories import FakeNvml, live_worker


def test_plan_up_new_gpu_worker() -> None:
    plan = plan_up(UpRequest(queues=["a", "b"], gpus="0-1"), [], "h", FakeNvml(4))
    assert [(w.id, w.gpus, w.queues) for w in plan.new] == [("h:gpu0,1", [0, 1], ["a", "b"])]
    assert plan.existing == [] and plan.warnings == []


def test_plan_up_conflict_names_owner() -> None:
    live = [live_worker("h:gpu0,1", [0, 1], ["a"])]
    with pytest.raises(Conflict, match=r"GPU 1 is already claimed by worker h:gpu0,1"):
        plan_up(UpRequest(queues=["b"], gpus="1-2"), live, "h", FakeNvml(4))


def test_plan_up_gpus_of_another_host_do_not_clash() -> None:
    """Many hosts on one store: GPU 0 of host ``other`` is not GPU 0 of host ``h``."""
    other = dataclasses.replace(live_worker("other:dgpu", [0, 1, 2, 3], ["quad"]), host="other")
    plan = plan_up(UpRequest(queues=["quad=4"], gpus="0-3"), [other], "h", FakeNvml(None))
    assert [(w.id, w.gpus) for w in plan.new] == [("h:dgpu", [0, 1, 2, 3])]
    plan = plan_up(UpRequest(queues=["a"], gpus="0"), [other], "h", FakeNvml(None))
    assert [(w.id, w.gpus) for w in plan.new] == [("h:gpu0", [0])]


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


def test_gpus_clash_only_on_one_machine_and_a_worker_name_only_names_the_id() -> None:
    """A shared store holds other hosts' workers: their GPU 0 is not ours, their
    ids are not taken over, and the row's host is the machine, not the name."""
    other = live_worker("h:gpu0", [0], ["a"])  # host "h"
    plan = plan_up(UpRequest(queues=["a"], gpus="0"), [other], "box", FakeNvml(4), machine="box")
    assert [(w.id, w.host) for w in plan.new] == [("box:gpu0", "box")]
    named = plan_up(UpRequest(queues=["b"], gpus="1"), [other], "trainer", FakeNvml(4), machine="box")
    assert [(w.id, w.host) for w in named.new] == [("trainer:gpu1", "box")]
    with pytest.raises(Conflict, match="worker h:gpu0 runs on host h; give this host another worker name"):
        plan_up(UpRequest(queues=["a"], gpus="0"), [other], "h", FakeNvml(4), machine="box")
