#!/usr/bin/env bash
# Static checks, run by .ci/run after the tests: lint, format (Python and C++), types, the docs site.
# Uses the .venv that scripts/test.sh made, with the [dev] and [docs] extras.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .venv ] || { echo "no .venv: run scripts/test.sh first" >&2; exit 2; }
. .venv/bin/activate
ruff check .
ruff format --check .
clang-format --dry-run -Werror cpp/*.cpp cpp/*.hpp cpp/cuda/*.cu cpp/cuda/*.cuh cpp/cuda/*.cpp cpp/cuda/*.hpp
mypy  # settings and files: [tool.mypy] in pyproject.toml
# The docs: strict (any warning fails), offline (no fonts or plugins that fetch).
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet --site-dir "${TXRAY_SITE_DIR:-site}"
echo "checks passed"
