#!/usr/bin/env bash
# Set up .venv and run the story demo; arguments go to run.py (default: customcpu int8).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -eq 0 ]; then set -- --target customcpu --precision int; fi
.venv/bin/python run.py "$@"
