#!/usr/bin/env bash
# The book on the newest torch and transformers on PyPI (issue: "Newest versions checked").
# Creates .venv-newest with the lock's pins except torch and transformers, which take the
# newest releases (torch from PyTorch's CPU index where it is reachable, else PyPI), then runs
# the unit tests and nbval over every notebook.  Usage: scripts/check_newest.sh [pytest args]
# Outputs are compared with the committed ones exactly as in `make test`: a difference is a
# place where a newer release changes what the book prints, to fix or to teach.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-newest
rm -rf "$VENV" && "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
grep -v -E '^(torch|transformers)==' requirements/book.lock > "$VENV/constraints.txt"
"$VENV/bin/python" -m pip install -q --retries 1 \
    --extra-index-url https://download.pytorch.org/whl/cpu \
    --upgrade torch transformers -r "$VENV/constraints.txt"
"$VENV/bin/python" -m pip install -q --no-deps -e .
"$VENV/bin/python" -c "import torch, transformers; print('torch', torch.__version__, '| transformers', transformers.__version__)"
"$VENV/bin/python" -m pytest tests chapters --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg \
    -p no:cacheprovider -q "$@"
