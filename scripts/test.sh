#!/usr/bin/env bash
# Set up a virtual environment with txray and its test dependencies, then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"   # the CPU wheel; unpinned torch pulls GBs of CUDA wheels
python -m pip install -q -e ".[test,dev,docs]"
export HF_HUB_OFFLINE=1
python -m pytest -q "$@"
