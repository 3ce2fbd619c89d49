# One command per job; each sets up what it needs in .venv (Python 3.10+, no conda, no GPU).
#   make book     build the static site into _build/html
#   make test     unit tests of vramlib + nbval over every notebook in chapters/
#   make execute  re-execute notebooks in place (NB=path/to.ipynb for one)
#   make lab      open the notebooks in JupyterLab
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NB     ?= chapters

.PHONY: book test unit nbval execute lab lock clean venv

venv: $(STAMP)

$(STAMP): requirements/book.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/book.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . -W -n --keep-going

test: $(STAMP)
	$(BIN)/python -m pytest tests chapters --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider -v

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

nbval: $(STAMP)
	$(BIN)/python -m pytest $(NB) --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

execute: $(STAMP)
	$(BIN)/python scripts/execute_notebooks.py $(NB)

lab: $(STAMP)
	$(BIN)/python -m pip install -q "jupyterlab>=4,<5"
	$(BIN)/jupyter lab chapters

lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q "torch==2.13.0" -e ".[book,test]"
	.venv-lock/bin/python -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu/torch==\1/' > requirements/book.lock.new
	rm -rf .venv-lock && mv requirements/book.lock.new requirements/book.lock

clean:
	rm -rf _build
