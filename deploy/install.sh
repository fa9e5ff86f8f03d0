#!/usr/bin/env bash
# Install fleet for this user: a virtual environment under ~/.local/share/fleet
# and `fleetctl` on ~/.local/bin.  Needs python3 (3.10+); installs python3-venv
# and git with apt when they are missing (as root, or through sudo).  Ends by
# saying whether the bin folder is on PATH and how to add it (path-note.sh).
# FLEET_EXTRAS=postgres installs the extra a host of a fleet on PostgreSQL needs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${FLEET_PREFIX:-$HOME/.local/share/fleet}"
bindir="${FLEET_BINDIR:-$HOME/.local/bin}"
extras="${FLEET_EXTRAS:+[$FLEET_EXTRAS]}"

need_apt=()
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
command -v git >/dev/null || need_apt+=(git)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"
fi

python3 -m venv "$prefix/venv"
"$prefix/venv/bin/pip" install -q --upgrade pip
"$prefix/venv/bin/pip" install -q "$here$extras"
mkdir -p "$bindir"
ln -sf "$prefix/venv/bin/fleetctl" "$bindir/fleetctl"
echo "installed: $bindir/fleetctl ($("$bindir/fleetctl" --version))"
"$here/deploy/path-note.sh" "$bindir"
