#!/usr/bin/env bash
# Set up sipstate on a Debian/Ubuntu machine: system packages, then a virtual
# environment in .venv with every extra. Safe to run again; prints what it does.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
PKGS="redis-server memcached sip-tester libeatmydata1 strace"
missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# The distribution starts redis-server and memcached as system services; sipstate
# starts its own on free ports, so the system ones are not needed (left as they are).

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
echo "setup: done; the harness is .venv/bin/harness"
