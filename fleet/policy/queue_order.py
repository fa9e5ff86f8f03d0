"""The order in which a worker tries its queues.

Without fairness the given order is a strict priority: the first queue is
always tried first.  With ``--order-fairness`` the queue that was just served
moves to the back, so queues take turns (ClearML Agent's behaviour).
"""

from __future__ import annotations


class QueueOrder:
    def __init__(self, queues: list[str], fairness: bool) -> None:
        self._queues = list(queues)
        self.fairness = fairness

    def current(self) -> list[str]:
        return list(self._queues)

    def served(self, queue: str) -> None:
        if self.fairness and queue in self._queues:
            self._queues.remove(queue)
            self._queues.append(queue)
