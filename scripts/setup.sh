#!/usr/bin/env bash
# One command sets everything up: a virtual screen for the GUI tests (Debian packages, when root),
# and a virtual environment in .venv with the project, its dependencies at the tested versions (constraints.txt) and
# its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v xvfb-run >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xauth libxcb-icccm4 libxcb-keysyms1 \
      libxcb-xinerama0 libxcb-image0 libxcb-render-util0 libxkbcommon-x11-0 libgl1 libegl1 >/dev/null
  else
    echo "note: install xvfb (e.g. apt-get install xvfb) to run the GUI tests" >&2
  fi
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# Every package at the exact version CI tested (constraints.txt); pyproject.toml itself declares ranges, so that the
# plugin also installs into a user's own napari environment (README, "Install into your napari").
# torch first, so that nothing else can pull another (multi-GB) build.
.venv/bin/python -m pip install --quiet -c constraints.txt torch torchvision
# the Qt binding: PyQt6 by default (QT_BINDING=pyqt5 for the design's PyQt5)
# setuptools' "Editable installation" notice (about import shadowing, which the package names already avoid) is noise
PYTHONWARNINGS=ignore::UserWarning .venv/bin/python -m pip install --quiet -c constraints.txt \
  -e ".[test,${QT_BINDING:-pyqt6}]"
.venv/bin/medlsam --help >/dev/null
echo "set-up done: activate with 'source .venv/bin/activate'"
