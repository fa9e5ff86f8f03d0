#!/usr/bin/env bash
# The test command: install what the tests need, then lint, type-check and test.
# Used as is by CI (.ci/run).  Safe to run again; reuses .venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_apt=()
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
command -v git >/dev/null || need_apt+=(git)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)  # the page test's browser (tests/metrics/test_page.py)
command -v curl >/dev/null || need_apt+=(curl)  # tests/api/test_auth.py speaks HTTP as another user
command -v chattr >/dev/null || need_apt+=(e2fsprogs)  # tests/store/test_store_faults.py: a read-only database
# tests/store: the store's tests run on SQLite and on a real PostgreSQL server, which they start
# themselves (initdb into a temporary folder as the postgres user: tests/store/pgserver.py)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'

# Docker mode's tests (tests/worker/test_docker.py) need an engine: start one when none answers
# (vfs storage, no iptables, no bridge: containers use --network=none).  Best effort: without
# an engine those tests skip with the reason.
if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! command -v dockerd >/dev/null; then
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq docker.io; } || true
  fi
  if command -v dockerd >/dev/null; then
    $sudo sh -c 'nohup dockerd --storage-driver=vfs --iptables=false --bridge=none >/tmp/fleet-dockerd.log 2>&1 &' || true
    for _ in $(seq 1 100); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
  fi
fi

.venv/bin/ruff check fleet tests bench
.venv/bin/ruff format --check fleet tests bench
.venv/bin/mypy
.venv/bin/python tests/importcycles.py  # fleet/ has no import cycle, function-level imports included
.venv/bin/pytest -p no:cacheprovider "$@"
