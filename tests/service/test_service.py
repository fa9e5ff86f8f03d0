"""The service layer's operations without HTTP: a real SQLite store in a
temporary home, real wake-up sockets (:class:`fleet.core.wakeups.Listener`, as
workers listen).  An operation refused for bad input changes nothing and
wakes no one; one that commits wakes exactly the workers that must act."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import ValidationError

from fleet.api.schemas import TaskCreate
from fleet.core.config import Config
from fleet.core.errors import Conflict, Forbidden, NotFound, UsageError
from fleet.core.home import Home
from fleet.core.models import Script, TaskSpec, TaskStatus, WorkerState
from fleet.core.nvml import Nvml
from fleet.core.wakeups import Listener
from fleet.manager.leases import Leases
from fleet.manager.supervise import WorkerSupervisor
from fleet.policy.upplan import UpRequest, plan_up
from fleet.service.operations import Service, build_service
from fleet.service.remote import RemoteEnd
from fleet.service.tasks import AttemptEnd, CloneEdits
from fleet.service.who import Who
from fleet.store import Store, open_store
from tests.factories import live_worker

ALICE = Who("alice", admin=False, actor="api:alice")
BOB = Who("bob", admin=False, actor="api:bob")
ROOT = Who("root", admin=True, actor="api:root")


@dataclass
class Setup:
    home: Home
    store: Store
    service: Service
    ears: dict[str, Listener]  # worker id -> its wake-up socket

    def woken(self) -> set[str]:
        """The workers that got a wake-up since the last look (each socket drained)."""
        return {wid for wid, ear in self.ears.items() if ear.drain()}


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    home = Home(tmp_path / "home").ensure()
    store = open_store(home)
    config = Config()
    service = build_service(
        store,
        home,
        config,
        processes=WorkerSupervisor(home, store, None, "h"),
        leases=Leases(config.fleet.remote_lease_seconds),
        nvml=Nvml(),
        hostname="h",
        lock=threading.RLock(),
    )
    for name in ("a", "b"):
        store.create_queue(name, [], "test")
    workers = [
        live_worker("h:gpu0", [0], ["a"]),
        live_worker("h:gpu1", [1], ["b"]),
    ]
    # a dynamic pool of GPUs 2-3 serving b with each task's own count (and c, two GPUs a task)
    workers += plan_up(UpRequest(queues=["c=2", "b"], gpus="2,3"), workers, "h", Nvml()).new
    assert workers[-1].id == "h:dgpu"
    for w in workers:
        store.register_worker(w, "test")
    ears = {w.id: Listener(home.root, w.id) for w in workers}
    yield Setup(home, store, service, ears)
    for ear in ears.values():
        ear.close()
    store.close()


def _spec(**fields: object) -> TaskSpec:
    return TaskSpec(script=Script(command=["true"], working_dir="/tmp"), **fields)  # type: ignore[arg-type]


def _all_tasks(store: Store) -> int:
    return store.list_tasks(limit=1000)[1]


def test_submit_wakes_only_the_queues_workers(setup: Setup) -> None:
    task = setup.service.tasks.submit(_spec(name="x"), "a", ALICE)
    assert (task.status, task.queue, task.user) == (TaskStatus.QUEUED, "a", "alice")
    assert setup.woken() == {"h:gpu0"}
    setup.service.tasks.submit(_spec(), None, ALICE)  # not queued: nobody to wake
    assert setup.woken() == set()
    setup.service.tasks.submit(_spec(), "b", ALICE)
    assert setup.woken() == {"h:gpu1", "h:dgpu"}


def test_a_refused_submit_changes_nothing_and_wakes_no_one(setup: Setup) -> None:
    with pytest.raises(Forbidden) as refused:
        setup.service.tasks.submit(_spec(user="bob"), "a", ALICE)
    assert refused.value.field == "user"
    # queue b is served by a static worker and a pool of 2 GPUs: 4 GPUs fit the static one
    setup.service.tasks.submit(_spec(gpus=4), "b", ALICE)
    assert setup.woken() == {"h:gpu1", "h:dgpu"}
    setup.store.set_worker_state("h:gpu1", WorkerState.DEAD, "stopped", "test")
    before = _all_tasks(setup.store)
    with pytest.raises(UsageError) as oversized:  # now only the pool serves b, and it has 2 GPUs
        setup.service.tasks.submit(_spec(gpus=4), "b", ALICE)
    assert oversized.value.field == "gpus" and "h:dgpu, has 2 GPUs" in oversized.value.message
    with pytest.raises(NotFound):
        setup.service.tasks.submit(_spec(), "nope", ALICE)
    assert _all_tasks(setup.store) == before
    assert setup.woken() == set()


def test_abort_wakes_the_worker_that_runs_the_task(setup: Setup) -> None:
    task = setup.service.tasks.submit(_spec(), "a", ALICE)
    claimed = setup.store.claim_next_task(setup.store.get_worker("h:gpu0"), ["a"], [0])
    assert claimed is not None and claimed.id == task.id
    setup.woken()
    with pytest.raises(Forbidden):  # only its submitter, the manager's user and root
        setup.service.tasks.abort(task.id, "", BOB)
    assert setup.store.get_task(task.id).abort_requested is None
    assert setup.woken() == set()
    aborted = setup.service.tasks.abort(task.id, "", ALICE)
    assert aborted.abort_requested == "aborted"
    assert setup.woken() == {"h:gpu0"}


def test_enqueue_dequeue_and_clone_as_their_callers(setup: Setup) -> None:
    task = setup.service.tasks.submit(_spec(env={"API_TOKEN": "s3cret"}), None, ALICE)
    with pytest.raises(Forbidden):
        setup.service.tasks.enqueue(task.id, "a", False, BOB)
    assert setup.store.get_task(task.id).status == TaskStatus.CREATED
    assert setup.service.tasks.enqueue(task.id, "b", False, ROOT).status == TaskStatus.QUEUED
    assert setup.woken() == {"h:gpu1", "h:dgpu"}
    assert setup.service.tasks.dequeue(task.id, ALICE).status == TaskStatus.CREATED
    # a clone is its cloner's; a value still masked keeps the original's real one
    clone = setup.service.tasks.clone(task.id, CloneEdits(queue="a", env={"API_TOKEN": "********"}), BOB)
    assert (clone.user, clone.parent, clone.env, clone.queue) == ("bob", task.id, {"API_TOKEN": "s3cret"}, "a")
    assert setup.woken() == {"h:gpu0"}


def test_a_failed_attempt_with_retries_left_goes_back_and_wakes_its_queue(setup: Setup) -> None:
    task = setup.service.tasks.submit(_spec(retries=1), "a", ALICE)
    worker = setup.store.get_worker("h:gpu0")
    assert setup.store.claim_next_task(worker, ["a"], [0]) is not None
    setup.woken()
    end = AttemptEnd(TaskStatus.FAILED, 1, "exit 1")
    again = setup.service.tasks.finish(task.id, end, actor="worker:h:gpu0", retry=True)
    assert (again.status, again.attempt) == (TaskStatus.QUEUED, 1)
    assert setup.woken() == {"h:gpu0"}
    assert setup.store.claim_next_task(worker, ["a"], [0]) is not None
    ended = setup.service.tasks.finish(task.id, end, actor="worker:h:gpu0", retry=True)
    assert ended.status == TaskStatus.FAILED  # no retry left
    assert setup.woken() == set()


def test_remote_executor_start_log_finish(setup: Setup) -> None:
    task = setup.service.tasks.submit(_spec(retries=1), "a", ALICE)
    with pytest.raises(Conflict) as ours:  # the id of one of our workers is not an executor's
        setup.service.remote.start(task.id, "h:gpu0", [], clone=False)
    assert ours.value.field == "worker"
    assert setup.store.get_task(task.id).status == TaskStatus.QUEUED
    started = setup.service.remote.start(task.id, "far:away", [0], clone=False)
    assert (started.status, started.worker, started.queue) == (TaskStatus.IN_PROGRESS, "far:away", "a")
    assert setup.service.remote.log(task.id, started.attempt, "hello\nboom\n") is None
    with pytest.raises(Conflict):  # an attempt that is not the running one
        setup.service.remote.log(task.id, started.attempt + 1, "late")
    setup.woken()
    ended = setup.service.remote.finish(task.id, RemoteEnd(started.attempt, 3, False, False, ""))
    assert ended.status == TaskStatus.QUEUED  # one retry left: back in its queue
    assert setup.woken() == {"h:gpu0"}
    assert "boom" in (setup.store.attempts(task.id)[0].reason or "")
    log = setup.home.task_log(task.id).read_text()
    assert "on remote executor far:away" in log and "ended: failed (exit code 3)" in log


def test_queue_tags_recompute_and_wake_and_a_served_queue_is_kept(setup: Setup) -> None:
    recomputed: list[bool] = []
    setup.service.wake.recompute = lambda: recomputed.append(True)
    queue = setup.service.queues.set_tags("b", ["force_workers:off"], "api")
    assert queue.tags == ["force_workers:off"] and recomputed == [True]
    assert setup.woken() == {"h:gpu1", "h:dgpu"}
    with pytest.raises(Conflict):
        setup.service.queues.delete("b", False, "api")
    assert setup.service.queues.get("b").name == "b"
    assert setup.service.queues.delete("b", True, "api") == "b"


def test_workers_up_refused_changes_nothing_and_stop_wakes(setup: Setup) -> None:
    workers = setup.service.workers
    before = [w.id for w in setup.store.list_workers()]
    with pytest.raises(NotFound):  # no such queue, and no --create-queue: nothing is created or started
        workers.add(UpRequest(queues=["new"], gpus="5"), "api")
    with pytest.raises(Conflict):  # GPU 0 is h:gpu0's
        workers.add(UpRequest(queues=["a"], gpus="0,4", create_queue=True), "api")
    assert [w.id for w in setup.store.list_workers()] == before
    assert "new" not in {q.name for q in setup.store.list_queues()}
    with pytest.raises(UsageError):
        workers.set_property("h:gpu0", "force", "maybe", None, "api")
    assert workers.get("h:gpu0").properties == {}
    assert setup.woken() == set()
    (stopped,) = workers.stop(["h:gpu1"], drain=False, requeue=False, by="test")
    assert stopped.id == "h:gpu1"
    assert setup.store.get_worker("h:gpu1").state == WorkerState.DEAD  # no process of it here
    assert setup.woken() == {"h:gpu1"}
    workers.closed = "the manager is shutting down"
    with pytest.raises(UsageError, match="shutting down"):
        workers.add(UpRequest(queues=["a"], gpus="6"), "api")


def test_nul_characters_are_refused_in_every_text_of_a_task() -> None:
    good = {"command": ["echo", "hi"], "working_dir": "/tmp"}
    TaskCreate.model_validate(good)
    for bad in ({"command": ["echo", "h\0i"]}, {"setup_script": "echo \0"}, {"name": "a\0"}):
        with pytest.raises(ValidationError):
            TaskCreate.model_validate({**good, **bad})


def test_a_batch_is_one_array_wakes_its_queues_once_and_is_refused_whole(setup: Setup) -> None:
    arrays = setup.service.arrays
    before = _all_tasks(setup.store)
    with pytest.raises(NotFound):  # the third spec's queue does not exist: the store writes none
        arrays.submit([(_spec(), "a"), (_spec(), "b"), (_spec(), "nope")], 1, True, ALICE)
    with pytest.raises(Forbidden):
        arrays.submit([(_spec(), "a"), (_spec(user="bob"), "a")], None, True, ALICE)
    assert _all_tasks(setup.store) == before and setup.woken() == set()
    batch = arrays.submit(
        [(_spec(), "a"), (_spec(), "b"), (_spec(env={"FLEET_ARRAY_INDEX": "7"}), "a")], 1, True, ALICE
    )
    assert batch.array is not None and batch.array.startswith("a-") and len(batch.tasks) == 3
    assert setup.woken() == {"h:gpu0", "h:gpu1", "h:dgpu"}
    made = [setup.store.get_task(t) for t in batch.tasks]
    assert [(t.array_id, t.array_index, t.user) for t in made] == [(batch.array, i, "alice") for i in range(3)]
    assert [t.env["FLEET_ARRAY_INDEX"] for t in made] == ["0", "1", "7"]  # the caller's own index is kept
    assert {t.env["FLEET_ARRAY_ID"] for t in made} == {batch.array}
    info = arrays.get(batch.array)
    assert (info.size, info.max_running, info.queue, info.counts) == (3, 1, None, {"queued": 3})
    with pytest.raises(Forbidden):  # only its submitter, the manager's user and root
        arrays.abort(batch.array, "", BOB)
    assert setup.woken() == set()
    assert {t.status for t in arrays.abort(batch.array, "", ALICE)} == {TaskStatus.STOPPED}
    setup.store.set_worker_state("h:gpu1", WorkerState.DEAD, "stopped", "test")
    with pytest.raises(UsageError) as oversized:  # only the pool of 2 GPUs serves b now
        arrays.submit([(_spec(), "b"), (_spec(gpus=4), "b")], None, True, ALICE)
    assert oversized.value.field == "gpus" and setup.woken() == set()
    plain = arrays.submit([(_spec(), None)], None, False, ALICE)
    assert plain.array is None and setup.store.get_task(plain.tasks[0]).array_id is None
    assert setup.woken() == set()  # nothing queued: nobody to wake
