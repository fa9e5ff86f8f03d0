"""The pool's allocation decision and the queue-spec grammar, table-tested (pure)."""

from __future__ import annotations

import random

import pytest

from fleet.core.errors import UsageError
from fleet.core.models import Worker, WorkerMode, WorkerState
from fleet.policy.allocate import Head, allocate, choose
from fleet.policy.pool_rules import Server, id_taken, oversized, task_worker_id
from fleet.policy.queuespec import QueueSpec, parse_queue_spec, parse_queue_specs

POOL = list(range(8))
QUAD, DUAL, SINGLE = QueueSpec("quad", 4, 4), QueueSpec("dual", 2, 2), QueueSpec("single", 1, 1)
OPP, ANY = QueueSpec("opp", 1, 4), QueueSpec("any")


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("quad=4", QueueSpec("quad", 4, 4)),
        ("opp=1-4", QueueSpec("opp", 1, 4)),
        ("opp=-4", QueueSpec("opp", 1, 4)),
        ("x=2-2", QueueSpec("x", 2, 2)),
        ("any", QueueSpec("any")),
    ],
)
def test_queue_specs(text: str, spec: QueueSpec) -> None:
    assert parse_queue_spec(text) == spec


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["q=0"], "at least 1 GPU"),
        (["q=5-2"], "range 5-2 goes down; write 2-5"),
        (["q=x"], "'x' is not a GPU count"),
        (["q="], "'' is not a GPU count"),
        (["q=4-"], "'4-' is not a GPU count"),
        (["q=-"], "'-' is not a GPU count"),
        (["q=2", "q=1"], "queue 'q' is given twice"),
        (["q=2", "q"], "queue 'q' is given twice"),
        (["bad name=2"], "invalid queue name"),
        ([], "at least one queue"),
    ],
)
def test_bad_queue_specs(texts: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_queue_specs(texts)
    assert message in info.value.message


def test_quad_behind_duals_reserves_and_starts_when_four_are_free() -> None:
    heads = {"quad": Head("q" * 32), "dual": Head("d" * 32)}
    waiting = allocate(POOL, {0, 1, 2, 3, 4, 5}, {}, [QUAD, DUAL], heads)
    assert waiting.starts == []
    assert [(r.queue, r.need, r.gpus) for r in waiting.reservations] == [("quad", 4, (6, 7))]
    assert "reserved for quad" in waiting.waiting["dual"]
    assert "holding GPU 6,7" in waiting.waiting["quad"]
    # one dual ends: four GPUs are free, so the quad starts now, ahead of every queued dual
    now = allocate(POOL, {2, 3, 4, 5}, {}, [QUAD, DUAL], heads)
    assert [(s.queue, s.gpus) for s in now.starts] == [("quad", (0, 1, 6, 7))]
    # the next waiting request (the dual) now holds GPUs as they free up
    assert [(r.queue, r.gpus) for r in now.reservations] == [("dual", ())]


def test_backfill_takes_only_unreserved_gpus() -> None:
    heads = {"quad": Head("q" * 32), "dual": Head("d" * 32), "single": Head("s" * 32)}
    # nothing waits above: the lower queues share the free GPUs
    both = allocate(POOL, set(), {}, [QUAD, DUAL, SINGLE], heads)
    assert [(s.queue, s.gpus) for s in both.starts] == [("quad", (0, 1, 2, 3)), ("dual", (4, 5)), ("single", (6,))]
    # a big request waits: it holds every free GPU, nothing is backfilled onto them
    big = QueueSpec("big", 6, 6)
    held = allocate(POOL, {0, 1, 2, 3}, {}, [big, DUAL, SINGLE], {**heads, "big": Head("b" * 32)})
    assert held.starts == [] and held.reservations[0].gpus == (4, 5, 6, 7)
    assert set(held.waiting) == {"big", "dual", "single"}


def test_a_head_another_pool_reserves_is_neither_reserved_nor_waited_for_here() -> None:
    """Two hosts' pools see one quad: the pool that does not hold it serves the duals."""
    held = Head("q" * 32, held_by="host0 (host0:dgpu)")
    heads = {"quad": held, "dual": Head("d" * 32)}
    out = allocate(POOL, {0, 1, 2, 3, 4, 5}, {}, [QUAD, DUAL], heads)
    assert out.reservations == []
    assert [(s.queue, s.gpus) for s in out.starts] == [("dual", (6, 7))]
    assert out.waiting["quad"] == "task qqqqqqqq is reserved on host0 (host0:dgpu)"
    # if it fits here now, it starts here (its reservation elsewhere ends with the claim)
    fits = allocate(POOL, {0, 1, 2, 3}, {}, [QUAD, DUAL], heads)
    assert [(s.queue, s.gpus) for s in fits.starts] == [("quad", (4, 5, 6, 7))]


def test_the_next_request_behind_a_held_head_reserves_by_the_same_rule() -> None:
    second = Head("r" * 32)
    heads = {"quad": Head("q" * 32, held_by="host0 (host0:dgpu)", then=second), "dual": Head("d" * 32)}
    out = allocate(POOL, {0, 1, 2, 3, 4, 5}, {}, [QUAD, DUAL], heads)
    assert out.starts == []
    assert [(r.queue, r.task_id, r.gpus) for r in out.reservations] == [("quad", "r" * 32, (6, 7))]
    assert out.waiting["quad"].startswith("task qqqqqqqq is reserved on host0 (host0:dgpu); behind it, task rrrrrrrr")
    assert "reserved for quad" in out.waiting["dual"]


def test_reservation_that_outsiders_block_holds_nothing() -> None:
    busy = {0: "5000 MiB used by processes fleet did not start"}
    heads = {"quad": Head("q" * 32), "dual": Head("d" * 32)}
    out = allocate([0, 1, 2, 3], set(), busy, [QUAD, DUAL], heads)
    assert out.reservations == []
    assert [(s.queue, s.gpus) for s in out.starts] == [("dual", (1, 2))]
    assert "busy or drained (GPU 0: 5000 MiB" in out.waiting["quad"]


def test_busy_gpus_are_skipped_until_free() -> None:
    heads = {"single": Head("s" * 32)}
    busy = {0: "x", 1: "y"}
    assert allocate([0, 1, 2, 3], set(), busy, [SINGLE], heads).starts[0].gpus == (2,)
    # a GPU our own task holds is not "busy" for admission
    assert allocate([0, 1, 2, 3], {0}, {0: "ours"}, [SINGLE], heads).starts[0].gpus == (1,)


@pytest.mark.parametrize(
    ("in_use", "gpus"),
    [(set(), (0, 1, 2, 3)), ({0, 1, 2, 3, 4}, (5, 6, 7)), ({0, 1, 2, 3, 4, 5, 6}, (7,))],
)
def test_min_max_takes_what_is_free_up_to_max(in_use: set[int], gpus: tuple[int, ...]) -> None:
    out = allocate(POOL, in_use, {}, [OPP], {"opp": Head("o" * 32)})
    assert out.starts[0].gpus == gpus


def test_min_max_waits_below_min() -> None:
    out = allocate(POOL, set(POOL) - {7}, {}, [QueueSpec("opp", 2, 4)], {"opp": Head("o" * 32)})
    assert out.starts == [] and out.reservations[0].gpus == (7,)


@pytest.mark.parametrize(("needed", "count"), [(None, 1), (0, 1), (1, 1), (3, 3), (8, 8)])
def test_bare_queue_uses_the_tasks_own_count(needed: int | None, count: int) -> None:
    out = allocate(POOL, set(), {}, [ANY], {"any": Head("a" * 32, needed)})
    assert len(out.starts[0].gpus) == count


def test_request_larger_than_the_pool_waits_with_a_reason_and_blocks_nobody() -> None:
    heads = {"any": Head("a" * 32, 9), "dual": Head("d" * 32)}
    out = allocate(POOL, set(), {}, [ANY, DUAL], heads)
    assert out.waiting["any"] == "task aaaaaaaa asks for 9 GPUs; this pool has 8"
    assert out.reservations == [] and [s.queue for s in out.starts] == ["dual"]


def test_first_fit_baseline_lets_small_tasks_pass_a_waiting_quad() -> None:
    heads = {"quad": Head("q" * 32), "dual": Head("d" * 32)}
    out = allocate(POOL, {0, 1, 2, 3, 4, 5}, {}, [QUAD, DUAL], heads, reserve=False)
    assert [(s.queue, s.gpus) for s in out.starts] == [("dual", (6, 7))]
    assert out.reservations == []


def test_topology_prefers_close_gpus() -> None:
    # two NVLink islands {0,2,4,6} and {1,3,5,7}; everything else across a host bridge
    island = {0: 0, 2: 0, 4: 0, 6: 0, 1: 1, 3: 1, 5: 1, 7: 1}
    topo = {(a, b): (1 if island[a] == island[b] else 30) for a in range(8) for b in range(a + 1, 8)}
    assert choose(range(8), 4, topo) == (0, 2, 4, 6)
    assert choose([1, 2, 3, 4, 5], 2, topo) == (1, 3)
    assert choose([1, 2, 3, 4, 5], 2, None) == (1, 2)
    big = list(range(32))
    wide = {(a, b): (1 if a % 2 == b % 2 else 30) for a in big for b in big if a < b}
    assert all(g % 2 == 1 for g in choose(big[1:], 8, wide))  # greedy path (too many sets to try all)


def test_no_starvation_under_a_random_stream() -> None:
    """Simulate a pool fed by an endless stream of duals and singles with a
    quad at the head of the first queue: whenever the quad waits, fewer than
    4 GPUs are free (it starts at the first moment it can) and no GPU is
    ever given twice."""
    rng = random.Random(7)
    running: dict[str, tuple[float, tuple[int, ...]]] = {}
    now, quads_started, n = 0.0, 0, 0
    quad_waiting = True
    for _ in range(400):
        in_use = {g for _, gpus in running.values() for g in gpus}
        heads = {"dual": Head(f"d{n}"), "single": Head(f"s{n}")}
        if quad_waiting:
            heads["quad"] = Head(f"q{n}")
        out = allocate(POOL, in_use, {}, [QUAD, DUAL, SINGLE], heads)
        for start in out.starts:
            assert not set(start.gpus) & in_use
            in_use |= set(start.gpus)
            n += 1
            running[f"{start.queue}{n}"] = (now + rng.uniform(0.5, 3), start.gpus)
            if start.queue == "quad":
                quads_started += 1
                quad_waiting = False
        if quad_waiting:
            assert len(POOL) - len(in_use) < 4
        name, (end, _) = min(running.items(), key=lambda kv: kv[1][0])
        now = end
        del running[name]
        if rng.random() < 0.3:
            quad_waiting = True
    assert quads_started > 50


def _worker(mode: WorkerMode, gpus: list[int] | None, wid: str) -> Worker:
    return Worker(wid, "box", mode, gpus, ["q"], False, WorkerState.BUSY, "", 0.0)


def test_ids_of_per_task_workers_are_taken() -> None:
    pool = _worker(WorkerMode.DYNAMIC, [4, 5, 6, 7], "box:dgpu")
    assert task_worker_id(pool, "x", [4, 5]) == "box:gpu4,5"
    assert id_taken(pool, "box:dgpu", "other", "x", [])  # its own id, anywhere
    assert id_taken(pool, "box:gpu4,5", "box", "x", [4, 5])
    assert not id_taken(pool, "box:gpu0,1", "box", "x", [0, 1])  # a static worker's GPUs
    assert not id_taken(pool, "box:gpu4,5", "other", "x", [4, 5])
    services = _worker(WorkerMode.SERVICES, None, "box:services")
    assert id_taken(services, "box:service:" + "ab" * 16, "box", "ab" * 16, [])
    assert not id_taken(services, "box:service:" + "cd" * 16, "box", "ab" * 16, [])
    static = _worker(WorkerMode.STATIC, [4, 5], "box:gpu4,5")
    assert id_taken(static, "box:gpu4,5", "box", "x", [4, 5]) and not id_taken(static, "box:gpu4", "box", "x", [4])


def test_submit_refuses_only_requests_no_server_can_ever_take() -> None:
    pool = Server("box:dgpu", "dynamic", 4, QueueSpec("any"))
    counted = Server("box:dgpu", "dynamic", 4, QueueSpec("any", 2, 2))
    static = Server("box:gpu0-7", "static", 8, QueueSpec("any"))
    assert oversized("any", 6, [pool]) is not None and "has 4 GPUs" in str(oversized("any", 6, [pool]))
    assert oversized("any", 4, [pool]) is None
    assert oversized("any", 6, [pool, static]) is None
    refused = str(oversized("any", 6, [counted]))  # a fixed count that is not the task's: refused
    assert "box:dgpu gives 2" in refused and "--gpus 6" in refused
    assert oversized("any", 2, [counted]) is None and oversized("any", 1, [counted]) is not None
    ranged = Server("box:dgpu", "dynamic", 4, QueueSpec("any", 1, 3))
    assert oversized("any", 3, [ranged]) is None and "gives 1-3" in str(oversized("any", 4, [ranged]))
    assert oversized("any", 6, [counted, static]) is None  # the static worker can give 6
    assert oversized("any", 6, []) is None  # nobody serves it yet: it waits
