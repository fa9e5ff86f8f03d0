"""The order in which a worker tries its queues."""

from __future__ import annotations

from fleet.policy.queue_order import QueueOrder


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
