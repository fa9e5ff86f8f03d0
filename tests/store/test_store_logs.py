"""Task logs in the store, on both implementations: in order, binary-safe,
no gaps or duplicates when a flush is tried again, writable only by the
task's running attempt, and gone with their task."""

from __future__ import annotations

import pytest

from fleet.core.errors import Conflict, NotFound
from fleet.core.models import TaskStatus
from fleet.store.interface import Store
from tests.store.backends import raw_execute
from tests.store.test_store import make_worker, spec


def running(store: Store) -> tuple[str, int]:
    """A task of queue ``q`` claimed by a worker: its id and attempt."""
    task_id = store.create_task(spec(), "q", "test").id
    worker = store.register_worker(make_worker(), "test")
    task = store.claim_next_task(worker, ["q"], [])
    assert task is not None and task.id == task_id
    return task.id, task.attempt


def test_chunks_read_back_in_order_across_their_boundaries_byte_for_byte(store: Store) -> None:
    task_id, attempt = running(store)
    assert store.log_size(task_id) == 0
    assert store.read_log(task_id, 0, 100).data == b""
    chunks = [b"first line\n", b"\xff\xfe not utf-8 \x00 nul\n", b"x" * 70_000, b"last, no newline"]
    pos = 0
    for chunk in chunks:
        assert store.append_log(task_id, attempt, pos, chunk) == pos + len(chunk)
        pos += len(chunk)
    whole = b"".join(chunks)
    assert store.log_size(task_id) == len(whole)
    got = store.read_log(task_id, 0, 10 * len(whole))
    assert (got.pos, got.data, got.size, got.end) == (0, whole, len(whole), len(whole))
    for start, limit in [(5, 20), (11, 1), (11, 30), (20, 70_010), (len(whole) - 3, 100), (len(whole), 10)]:
        assert store.read_log(task_id, start, limit).data == whole[start : start + limit], (start, limit)
    assert store.read_log(task_id, len(whole) + 50, 10).data == b""


def test_a_flush_tried_again_is_stored_once_and_a_gap_or_an_overlap_is_refused(store: Store) -> None:
    task_id, attempt = running(store)
    assert store.append_log(task_id, attempt, 0, b"abc\n") == 4
    assert store.append_log(task_id, attempt, 0, b"abc\n") == 4  # its answer was lost: sent again
    assert store.append_log(task_id, attempt, 4, b"def\n") == 8
    assert store.append_log(task_id, attempt, 4, b"def\n") == 8
    with pytest.raises(Conflict, match="at byte 10, but the stored log ends at 8"):
        store.append_log(task_id, attempt, 10, b"gap\n")
    with pytest.raises(Conflict, match="at byte 2, but the stored log ends at 8"):
        store.append_log(task_id, attempt, 2, b"overlap\n")
    with pytest.raises(Conflict):  # the same place, other bytes: not a retry
        store.append_log(task_id, attempt, 4, b"different\n")
    assert store.read_log(task_id, 0, 100).data == b"abc\ndef\n"


def test_only_the_running_attempt_writes_the_log(store: Store) -> None:
    created = store.create_task(spec(), None, "test").id
    with pytest.raises(Conflict, match="it is created at attempt 0"):
        store.append_log(created, 1, 0, b"never ran\n")
    task_id, attempt = running(store)
    store.append_log(task_id, attempt, 0, b"one\n")
    with pytest.raises(Conflict, match="not running attempt 2"):
        store.append_log(task_id, attempt + 1, 4, b"from the future\n")
    # the attempt ends (a host declared lost): a retry claims it and goes on from the stored end
    store.finish_task(task_id, TaskStatus.FAILED, exit_code=None, reason="host h lost", actor="test", requeue="tail")
    with pytest.raises(Conflict, match="it is queued at attempt 1"):
        store.append_log(task_id, attempt, 4, b"stale copy\n")
    again = store.claim_next_task(store.get_worker("w1"), ["q"], [])
    assert again is not None and again.attempt == attempt + 1
    with pytest.raises(Conflict, match="not running attempt 1"):
        store.append_log(task_id, attempt, 4, b"stale copy\n")
    assert store.append_log(task_id, again.attempt, 4, b"two\n") == 8
    store.finish_task(task_id, TaskStatus.COMPLETED, exit_code=0, reason="", actor="test")
    with pytest.raises(Conflict, match="it is completed"):
        store.append_log(task_id, again.attempt, 8, b"after the end\n")
    assert store.read_log(task_id, 0, 100).data == b"one\ntwo\n"
    with pytest.raises(NotFound):
        store.append_log("0" * 32, 1, 0, b"no such task\n")


def test_a_tasks_chunks_go_with_it(store: Store, store_target: str) -> None:
    task_id, attempt = running(store)
    other, other_attempt = running(store)
    store.append_log(task_id, attempt, 0, b"mine\n")
    store.append_log(other, other_attempt, 0, b"other\n")
    raw_execute(store_target, "DELETE FROM tasks WHERE id = ?", (task_id,))
    assert store.log_size(task_id) == 0
    assert store.read_log(other, 0, 100).data == b"other\n"
