#!/usr/bin/env bash
# Say whether BINDIR (where install.sh put `fleetctl`) is on this shell's PATH,
# and if not, how to add it.  Used by install.sh; exit 0 either way.
set -euo pipefail
bindir="${1:?usage: path-note.sh BINDIR}"
case ":${PATH}:" in
  *":${bindir}:"*|*":${bindir}/:"*)
    echo "$bindir is on your PATH: run fleetctl" ;;
  *)
    rc="$HOME/.bashrc"
    case "${SHELL:-}" in */zsh) rc="$HOME/.zshrc" ;; esac
    echo "$bindir is NOT on your PATH, so 'fleetctl' alone will not be found. Add it with:"
    echo "  echo 'export PATH=\"$bindir:\$PATH\"' >> $rc && export PATH=\"$bindir:\$PATH\""
    echo "or run $bindir/fleetctl" ;;
esac
