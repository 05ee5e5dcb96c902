#!/usr/bin/env bash
# Run the story demo; arguments go to run.py (default: customcpu int8).
# Sets .venv up only when it is missing or older than what it was installed from (pyproject.toml,
# setup.py, csrc/, this script's set-up): a second call just runs. FORCE_SETUP=1 sets up anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.bertqa-setup-done
if [ "${FORCE_SETUP:-0}" = 1 ] || [ ! -x .venv/bin/python ] || [ ! -f "$stamp" ] || \
   [ -n "$(find pyproject.toml setup.py scripts/setup.sh csrc -newer "$stamp" -print -quit 2>/dev/null)" ]; then
    bash scripts/setup.sh
    touch "$stamp"
fi
if [ $# -eq 0 ]; then set -- --target customcpu --precision int; fi
exec .venv/bin/python run.py "$@"
