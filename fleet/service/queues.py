"""Queue operations: create, tag, delete; and the reads.

A queue's tags can pause or force its workers (``force_workers:on|off``,
see :mod:`fleet.policy.effective`), so a tag change recomputes the
workers' effective states and wakes the queue's workers.  A queue a live
worker pulls from is not deleted unless forced.
"""

from __future__ import annotations

from fleet.core.errors import Conflict
from fleet.core.models import Queue, WorkerState
from fleet.service.wake import Wake
from fleet.store import Store


class Queues:
    def __init__(self, store: Store, wake: Wake) -> None:
        self.store = store
        self.wake = wake

    def all(self) -> list[Queue]:
        return self.store.list_queues()

    def get(self, name_or_id: str) -> Queue:
        return self.store.get_queue(name_or_id)

    def create(self, name: str, tags: list[str], actor: str) -> Queue:
        return self.store.create_queue(name, tags, actor)

    def set_tags(self, name_or_id: str, tags: list[str], actor: str) -> Queue:
        updated = self.store.set_queue_tags(name_or_id, tags, actor)
        self.wake.schedule()
        self.wake.queue(updated.name)
        return updated

    def delete(self, name_or_id: str, force: bool, actor: str) -> str:
        """Refused (409) while a live worker pulls from the queue, naming the
        workers, unless ``force``: the workers would poll a queue that is gone.
        Returns the queue's name."""
        name = self.store.get_queue(name_or_id).name
        serving = [w.id for w in self.store.list_workers() if w.state != WorkerState.DEAD and name in w.queues]
        if serving and not force:
            raise Conflict(
                f"queue {name!r} is served by live worker(s) {', '.join(sorted(serving))}; "
                "stop them first or delete with --force (API: force=true)",
                field="queue",
            )
        self.store.delete_queue(name_or_id, actor, force=force)
        return name
