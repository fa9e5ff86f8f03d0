"""Wake-up datagrams reach a listener; none is silent."""

from __future__ import annotations

import select
from pathlib import Path

from fleet.core.wakeups import Listener, wake


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
