#!/usr/bin/env bash
# Set up .venv with the test extras and run the tests; arguments go to pytest.
#   bash scripts/test.sh                # every tier: what CI runs
#   bash scripts/test.sh -m unit        # the fast tier: no backend but the reference, no
#                                       # subprocess or server: seconds, not minutes
#   bash scripts/test.sh -m parity      # numerics against a reference: backends, host kernels, families
#   bash scripts/test.sh -m e2e         # CLI, HTTP servers, a browser, whole QA runs
#   bash scripts/test.sh -m ray         # Ray (minutes); -m "not ray" runs all the others
# With .venv set up, skip the set-up step: .venv/bin/python -m pytest -m unit
# The tiers are one table: TIERS in tests/conftest.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/python -m pytest -q "$@"
