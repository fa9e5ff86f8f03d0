"""Concurrency in tests: many calls started together, each in its own thread."""

from __future__ import annotations

import threading
from collections.abc import Callable


def at_once(call: Callable[[int], None], count: int) -> None:
    """Run ``call(0)`` .. ``call(count - 1)`` at the same time and wait until all have returned."""
    threads = [threading.Thread(target=call, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
