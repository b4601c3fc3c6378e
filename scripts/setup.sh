#!/usr/bin/env bash
# One command sets everything up: a virtual environment in .venv with the project and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first, pinned, so that nothing else can pull another (multi-GB) build.
.venv/bin/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/medlsam --help >/dev/null
echo "set-up done: activate with 'source .venv/bin/activate'"
