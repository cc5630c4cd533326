#!/usr/bin/env bash
# One command: install everything, start what the tests need that is not already running, run the tests.
# Uses PostgreSQL/Redis when DATABASE_URL/REDIS_URL are set (as in CI); the embedded defaults otherwise.
# Extra arguments go to pytest (e.g. ./scripts/test.sh -m "not slow" -x).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
if [ -x scripts/libvirt-up.sh ]; then
  ./scripts/libvirt-up.sh || echo "test: libvirtd could not be started; slow-tier VM tests will report why"
fi
exec .venv/bin/python -m pytest "$@"
