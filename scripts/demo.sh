#!/usr/bin/env bash
# The README's main command: set up .venv with txray and the demo's extras, then run the paper's
# study on real offline text (`txray demo`). Arguments are passed through, e.g. --paper on a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"   # the CPU wheel; unpinned torch pulls GBs of CUDA wheels
python -m pip install -q -e ".[capture,pos,corpora,report,serve]"  # serve: `txray serve demo-output/` afterwards
txray demo --out demo-output "$@"
