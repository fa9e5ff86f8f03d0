"""Many hosts, as README's Deploy section ("Many hosts") sets them up: the
documented config is what fleet reads, and the store's credentials stay
with fleet."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from fleet.core.config import parse_config_string
from fleet.store.postgres_faults import StoreUrl
from tests.conftest import Fleet

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
