#!/usr/bin/env bash
# Set up (system packages, .venv, package) and run the whole test suite.
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
.venv/bin/ruff check --quiet ossencfs tests scripts
.venv/bin/python -m mypy    # configured in pyproject.toml: strict on the model's rooms and seams
exec .venv/bin/python -m pytest "$@"
