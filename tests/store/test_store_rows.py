"""The row layer: a worker's typed records survive the store unchanged, a row
written by an older version still reads, and a column this version cannot
read is refused naming the worker and the column.  On both implementations."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest

from fleet.core.errors import StoreError
from fleet.core.models import DockerMode, StopRequest, Worker, WorkerMode, WorkerOptions, WorkerState
from fleet.policy.allocate import PoolChild, PoolState, Reservation
from fleet.policy.effective import Effective
from fleet.policy.hours import make_schedule
from fleet.policy.queuespec import parse_queue_specs
from fleet.store.interface import Store
from tests.store.backends import open_target, raw_execute

ZONE = dt.timezone(dt.timedelta(hours=1))


def _pool_worker() -> Worker:
    return Worker(
        id="box:dgpu",
        host="box",
        mode=WorkerMode.DYNAMIC,
        gpus=[0, 1, 2, 3],
        queues=["quad", "any"],
        order_fairness=False,
        state=WorkerState.IDLE,
        state_reason="",
        created_at=time.time(),
        schedule=make_schedule([], ["18-24 SAT"]),
        options=WorkerOptions(
            specs=tuple(parse_queue_specs(["quad=4", "any"])),
            docker=DockerMode("img:1", ("--env", "A=1")),
        ),
    )


@pytest.fixture
def target(store_target: str) -> str:
    return store_target


@pytest.fixture
def store(target: str) -> Iterator[Store]:
    s = open_target(target)
    yield s
    s.close()


def _column(target: str, column: str, text: str | None) -> None:
    """Write a worker column behind the store's back (another version, or a hand)."""
    raw_execute(target, f"UPDATE workers SET {column} = ?", (text,))


def test_every_typed_column_round_trips(store: Store) -> None:
    registered = store.register_worker(_pool_worker(), "t")
    assert registered.options == _pool_worker().options and registered.schedule == _pool_worker().schedule
    effective = Effective(
        active=False,
        reason="downtime",
        pullable=(),
        paused_queues={"quad": "downtime", "any": "downtime"},
        next_change=dt.datetime(2027, 1, 2, 3, 4, 5, tzinfo=ZONE),
    )
    pool = PoolState(
        gpus=(0, 1, 2, 3),
        free=(3,),
        children=(PoolChild("box:gpu0,1", "ab" * 16, "any", (0, 1), 4321),),
        reservations=(Reservation("quad", "cd" * 16, 4, (2,)),),
        waiting={"quad": "needs 4 GPUs"},
        busy={3: "used by another process"},
        max=None,
    )
    stop = StopRequest(drain=True, requeue=False, by="fleetctl stop")
    store.update_worker("box:dgpu", effective=effective, pool=pool, stop_request=stop)
    again = store.get_worker("box:dgpu")
    assert (again.effective, again.pool, again.stop_request) == (effective, pool, stop)
    assert again.options == registered.options and again.schedule == registered.schedule
    store.update_worker("box:dgpu", pool=None, stop_request=None)
    cleared = store.get_worker("box:dgpu")
    assert cleared.pool is None and cleared.stop_request is None


def test_a_row_from_an_older_version_reads_with_defaults(store: Store, target: str) -> None:
    store.register_worker(_pool_worker(), "t")
    _column(target, "effective", '{"active":true,"reason":"no schedule","pullable":["any"]}')
    _column(target, "stop_request", '{"drain":true}')
    _column(target, "options", '{"max":0}')  # a limit that is not one: none
    worker = store.get_worker("box:dgpu")
    assert worker.effective == Effective(True, "no schedule", ("any",))
    assert worker.stop_request == StopRequest(drain=True, requeue=False, by="fleetctl stop")
    assert worker.options == WorkerOptions()
    _column(target, "options", None)
    assert store.get_worker("box:dgpu").options == WorkerOptions()


@pytest.mark.parametrize(
    ("column", "text", "why"),
    [
        ("effective", "{not json", "Expecting property name"),
        ("pool", "[1, 2]", "not a JSON object"),
        ("schedule", '{"kind":"sometimes","specs":[]}', "neither uptime nor downtime"),
        ("schedule", '{"kind":"uptime","specs":["25-26 MON"]}', "25-26 MON"),
        ("options", '{"specs":["quad=zero"]}', "not a GPU count"),
        ("pool", '{"children":[{"worker":"w"}]}', "task"),
    ],
)
def test_a_column_that_cannot_be_read_is_refused_by_name(
    store: Store, target: str, column: str, text: str, why: str
) -> None:
    store.register_worker(_pool_worker(), "t")
    _column(target, column, text)
    with pytest.raises(StoreError, match=f"worker box:dgpu: its stored {column} .* cannot be read") as caught:
        store.get_worker("box:dgpu")
    assert why in str(caught.value)
