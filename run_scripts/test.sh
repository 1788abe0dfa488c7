#!/bin/sh
# The test suite, on a bare machine too: sets up .venv on first use, then runs pytest.
#   sh run_scripts/test.sh [pytest args]
set -eu
cd "$(dirname "$0")/.."
. run_scripts/setup_env.sh
exec "$PYTHON" -m pytest "$@"
