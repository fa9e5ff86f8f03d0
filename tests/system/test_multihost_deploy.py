"""Many hosts, as README's Deploy section ("Many hosts") sets them up: the
documented config is what fleet reads, and the store's credentials stay
with fleet."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from fleet.core.config import parse_config_string
from fleet.manager.host_lease import AFTER_OUTAGE_LEASES
from fleet.store.postgres_faults import StoreUrl
from tests.conftest import Fleet, fleet_hosts
from tests.pgserver import PgServer, server_or_skip

README = Path(__file__).resolve().parents[2] / "README.md"


def _many_hosts_blocks() -> list[str]:
    text = README.read_text()
    start = text.index("### Many hosts: one PostgreSQL store")
    section = text[start : text.index("\n## ", start)]
    return re.findall(r"^```\n(.*?)^```", section, flags=re.S | re.M)


def test_the_readme_config_of_a_host_is_what_fleet_reads() -> None:
    (block,) = [b for b in _many_hosts_blocks() if "store { url:" in b]
    config = parse_config_string(block)
    url = config.fleet.store.url
    assert url == "postgresql://fleet@db.lab:5432/fleet?sslmode=verify-full&sslrootcert=/home/gpu/.fleet-db-ca.crt"
    assert config.agent.worker_name == "gpu-a"
    parsed = StoreUrl.parse(url)  # what the store opens: libpq's parameters, none secret here
    assert parsed.shown == url and parsed.secrets == ()


def test_the_readme_pg_hba_line_is_tls_only_with_scram() -> None:
    (block,) = [b for b in _many_hosts_blocks() if "hostssl" in b]
    lines = [line.split() for line in block.splitlines() if line.strip() and not line.startswith("#")]
    assert lines == [["hostssl", "fleet", "fleet", "10.1.0.0/24", "scram-sha-256"]]


def _with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_a_task_gets_neither_the_store_url_nor_the_database_password(hosts: list[Fleet]) -> None:
    """A task runs the users' code: with the store's URL (and its password) it could
    write any row of the fleet's database.  The manager has both in its environment."""
    host = hosts[0]
    password = "s3cret-Store-Pw-4242"
    host.join(_with_password(host.store_url, password), "host0")  # trust auth here: the server ignores it
    host.env["PGPASSWORD"] = password
    host.up("--cpu-only", "--queue", "q", "--create-queue")
    code = "import os; print('url=%s pw=%s' % (os.environ.get('FLEET_STORE_URL'), os.environ.get('PGPASSWORD')))"
    task_id = host.submit("q", "python3", "-c", code, opts=("--no-code",))
    host.ok("wait", task_id, timeout=120)
    log = host.ok("logs", task_id)
    assert "url=None pw=None" in log, log
    assert password not in log


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    """A PostgreSQL server of this test's own, to stop and start."""
    with server_or_skip() as server:
        yield server


@pytest.mark.timeout(240)
def test_a_database_outage_longer_than_the_lease_declares_no_host_lost(tmp_path: Path, own_pg: PgServer) -> None:
    """Every host loses the database at once (a restart, a failover): none of them
    renews, and that says nothing about the hosts.  The first manager back must not
    declare the others lost (killing and moving their tasks) before they had a
    lease's time to renew."""
    url = own_pg.url(own_pg.create_database())
    with contextlib.ExitStack() as stack:
        hosts = fleet_hosts(stack, tmp_path, url, 2, config="fleet.host_lease_seconds: 6")
        for i, host in enumerate(hosts):
            host.up("--cpu-only", "--queue", f"q{i}", "--create-queue")
        task_id = hosts[0].submit("q1", "sleep", "300", opts=("--no-code",))
        hosts[0].wait_for(lambda: hosts[0].task(task_id)["status"] == "in_progress", timeout=60, what="task started")
        own_pg.stop("fast")
        time.sleep(14)  # the database is away for two leases and more
        own_pg.start()
        # both managers are back once each has renewed its lease (a new renewal: renewed_at moves on)
        first = _renewed(url)
        hosts[0].wait_for(lambda: _both_renewed_since(url, first), timeout=60, what="both hosts renewed")
        # and as long as a manager back from an outage waits before it judges others, and a second more
        time.sleep(AFTER_OUTAGE_LEASES * 6 + 1)
        with psycopg.connect(url) as conn:
            states: dict[str, str] = dict(conn.execute("SELECT name, state FROM hosts").fetchall())
            lost = conn.execute("SELECT subject, reason FROM events WHERE kind = 'host' AND new = 'lost'").fetchall()
        assert states == {"host0": "up", "host1": "up"} and lost == [], lost
        task = hosts[0].task(task_id)
        assert (task["status"], task["attempt"]) == ("in_progress", 1)
        hosts[0].ok("abort", task_id)


def _renewed(url: str) -> dict[str, float]:
    with contextlib.suppress(psycopg.OperationalError), psycopg.connect(url, connect_timeout=2) as conn:
        return dict(conn.execute("SELECT name, renewed_at FROM hosts").fetchall())
    return {}


def _both_renewed_since(url: str, before: dict[str, float]) -> bool:
    now = _renewed(url)
    return len(now) == 2 and all(now[name] > before.get(name, 0.0) for name in now)
