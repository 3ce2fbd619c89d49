#!/usr/bin/env bash
# The ends of the supported Python range (pyproject.toml: requires-python >= 3.10; checked up
# to 3.13).  For each interpreter: a fresh venv, `pip install --no-deps .` (the package as a
# reader installs it: its data files included), every module byte-compiled (syntax of that
# Python), and the torch-free part run - `vramlib models`, and `vramlib estimate --json` /
# `vramlib fit --json` on a few scenarios - with its output compared byte for byte to this
# checkout's under the default interpreter.  The torch-dependent layers are not run here: the
# CPU build of torch comes from PyTorch's index (see README), and the lock is resolved for
# 3.11 (scripts/check_newest.sh and `make test` run those on 3.11).
# Usage: scripts/check_python_ends.sh [python3.10 python3.13 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYS=("$@")
[ ${#PYS[@]} -eq 0 ] && PYS=(python3.10 python3.13)
REF=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
SCENARIOS=(
  "estimate gpt2 --batch 8 --seq 1024 --json"
  "estimate llama-2-7b --stage inference --batch 4 --prompt 2048 --new-tokens 256 --dtype bf16 --json"
  "estimate llama-2-7b --batch 1 --seq 2048 --dtype bf16 --trainable lora --checkpointing full --json"
  "fit llama-2-7b --gpu H100 --stage inference --dtype bf16 --json"
)
run_all() {  # $1: python, $2: output folder
  mkdir -p "$2"
  "$1" -m vramlib models > "$2/models.txt"
  local i=0
  for s in "${SCENARIOS[@]}"; do
    # shellcheck disable=SC2086
    (cd "$WORK" && "$1" -m vramlib $s) > "$2/scenario-$i.json"
    i=$((i + 1))
  done
}
PYTHONPATH=$ROOT run_all "$REF" "$WORK/ref"
status=0
for py in "${PYS[@]}"; do
  if ! command -v "$py" > /dev/null; then
    echo "SKIP  $py: not installed"; status=1; continue
  fi
  ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  venv="$WORK/venv-$ver"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --no-deps "$ROOT"
  site=$("$venv/bin/python" -c 'import vramlib, pathlib; print(pathlib.Path(vramlib.__file__).parent)')
  "$venv/bin/python" -m compileall -q "$site"
  run_all "$venv/bin/python" "$WORK/out-$ver"
  if diff -r "$WORK/ref" "$WORK/out-$ver" > "$WORK/diff-$ver"; then
    echo "ok    Python $ver: vramlib installs, every module compiles, CLI output identical"
  else
    echo "FAIL  Python $ver: CLI output differs from $REF's:"; head -20 "$WORK/diff-$ver"
    status=1
  fi
done
exit $status
