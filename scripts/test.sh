#!/usr/bin/env bash
# The README's test command after setup: the whole suite with the shipped models.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m pytest -q "$@"
