"""fleetctl's rewriting of multi-value options."""

from __future__ import annotations

import pytest

from fleet.cli.main import expand_multi


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ("up --queue a b --gpus 0", "up --queue a --queue b --gpus 0"),
        ("up --queue a", "up --queue a"),
        ("up --gpus 0 --queue a b c", "up --gpus 0 --queue a --queue b --queue c"),
        ("up --queue a b --order-fairness", "up --queue a --queue b --order-fairness"),
        ("up --uptime 1-2 3-4 --queue a", "up --uptime 1-2 --uptime 3-4 --queue a"),
        ("submit --env A=1 B=2 -- cmd --queue x", "submit --env A=1 --env B=2 -- cmd --queue x"),
        ("submit --queue q -- python --env A=1 B=2", "submit --queue q -- python --env A=1 B=2"),
        ("submit --env A=1 python x.py", "submit --env A=1 python x.py"),
        ("submit --name n --env A=1 B=2 python x.py", "submit --name n --env A=1 --env B=2 python x.py"),
        ("--config F up --queue a b", "--config F up --queue a --queue b"),
        ("--config up up --queue a b", "--config up up --queue a --queue b"),
        ("--config=F up --queue a b", "--config=F up --queue a --queue b"),
        ("tasks --queue a b", "tasks --queue a b"),
        ("--version", "--version"),
        ("", ""),
    ],
)
def test_expand_multi(argv: str, expected: str) -> None:
    assert expand_multi(argv.split()) == expected.split()
