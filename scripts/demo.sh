#!/usr/bin/env bash
# One command: install everything, then run the dashboard with a demo rehearsal on the embedded
# defaults (SQLite, in-process Celery worker, in-memory channel layer). Ctrl-C stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python manage.py demo "$@"
