# One command per job; each sets up what it needs in .venv (Python 3.10+, no conda, no GPU).
#   make book     build the static site into _build/html
#   make test     unit tests of vramlib + nbval over every notebook in chapters/
#   make execute  re-execute notebooks in place (NB=path/to.ipynb for one)
#   make lab      open the notebooks in JupyterLab
# Publishing (see README):
#   make linkcheck     broken internal links/anchors in _build/html (after make book)
#   make browser-test  headless Chromium loads every page of _build/html (after make book)
#   make pdf           the whole book as a PDF (xelatex; installs Debian's TeX packages if missing)
#   make cheatsheet    the 2-page formula cheat sheet PDF from handouts/cheatsheet.tex
PYTHON ?= python3
# The CPU build of torch (0.19 GB) from PyTorch's index; PyPI's plain torch is the ~3 GB CUDA build.
TORCH_VERSION   := 2.13.0+cpu
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
VENV   := .venv
BIN    := $(VENV)/bin
# make execute: one kernel per core (at most 4), each with one thread
JOBS   ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
STAMP  := $(VENV)/.installed
NB     ?= chapters

# Offline assets, from the npm registry at exact versions (official distributions; the site
# needs no CDN to render): MathJax 3 for math, RequireJS + the Jupyter widgets HTML manager
# for pages with static widget state, Pyodide's core (CPython in WebAssembly, no packages)
# for the live calculator.  Unpacked into _vendor (ignored by git), which _config.yml
# adds to html_static_path (not into _static: Jupyter Book would add every .js found there to
# every page).
PYODIDE  := 314.0.7
NPM_PKGS := mathjax@3.2.2 requirejs@2.3.8 @jupyter-widgets/html-manager@1.0.15 pyodide@$(PYODIDE)
VENDOR   := _vendor
APT      := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends
TEX_PKGS := texlive-xetex texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended \
            texlive-lang-cjk texlive-lang-chinese xindy latexmk fonts-noto-cjk fonts-freefont-otf lmodern poppler-utils

.PHONY: book test test-fast unit nbval execute lab lock clean venv assets status linkcheck browser-test \
        pdf cheatsheet tex chromium calculator repository handouts screenshots

venv: $(STAMP)

$(STAMP): requirements/book.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --retries 1 -r requirements/book.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

book: $(STAMP) assets status calculator repository
	$(BIN)/jupyter-book build . -W -n --keep-going

assets: $(VENDOR)/.installed

$(VENDOR)/.installed: Makefile
	rm -rf $(VENDOR) build/npm && mkdir -p $(VENDOR) build/npm
	cd build/npm && npm pack --silent $(NPM_PKGS) >/dev/null
	mkdir -p build/npm/mathjax && tar xzf build/npm/mathjax-*.tgz -C build/npm/mathjax
	mkdir -p $(VENDOR)/mathjax && cp build/npm/mathjax/package/LICENSE $(VENDOR)/mathjax/
	cd build/npm/mathjax/package/es5 && cp -r tex-mml-chtml.js input output ui a11y sre adaptors $(CURDIR)/$(VENDOR)/mathjax/
	tar xzf build/npm/requirejs-*.tgz -C build/npm && cp build/npm/package/require.js $(VENDOR)/require.js && rm -rf build/npm/package
	tar xzf build/npm/jupyter-widgets-html-manager-*.tgz -C build/npm
	mkdir -p $(VENDOR)/html-manager && cp build/npm/package/dist/embed-amd.js build/npm/package/dist/*.woff* \
	   build/npm/package/dist/*.ttf build/npm/package/dist/*.eot build/npm/package/dist/*.svg $(VENDOR)/html-manager/
	rm -rf build/npm/package && tar xzf build/npm/pyodide-$(PYODIDE).tgz -C build/npm
	mkdir -p $(VENDOR)/pyodide && cd build/npm/package && cp pyodide.js pyodide.asm.mjs pyodide.asm.wasm \
	   python_stdlib.zip pyodide-lock.json package.json $(CURDIR)/$(VENDOR)/pyodide/
	touch $@

# The live calculator (chapters/part1-stage-memory/live-calculator.md): vramlib.estimate as a
# wheel for Pyodide (build/site-static, served as _static/calculator/), Pyodide's memory
# snapshot with that wheel imported (a 1 s start instead of 6 s), and the static fit
# table that the PDF prints in its place (build/calculator/fit-table.md).  From this checkout.
calculator: $(STAMP) assets
	$(BIN)/python scripts/build_calculator_wheel.py build/site-static
	node scripts/build_calculator_snapshot.mjs $(VENDOR)/pyodide build/site-static
	$(BIN)/python scripts/calculator_fit_table.py build/calculator/fit-table.md

status: $(STAMP)
	$(BIN)/python scripts/book_status.py

# The repository URL (_config.yml repository.url, the one setting): fails on a placeholder, or
# when a notebook's Colab set-up cell does not match it (`python scripts/colab_setup.py --all`).
repository: $(STAMP)
	$(BIN)/python scripts/colab_setup.py --check

linkcheck: $(STAMP)
	$(BIN)/python scripts/check_links.py _build/html

browser-test: $(STAMP) chromium
	$(BIN)/python scripts/browser_test.py _build/html

# System packages are installed only where this user may (root, or passwordless sudo);
# otherwise the target stops and says what to install.
SUDO := $(shell [ "$$(id -u)" = 0 ] && echo "" || { sudo -n true 2>/dev/null && echo sudo || echo NO; })

chromium:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$(SUDO)" != NO ] || { echo "make: Chromium and ChromeDriver are missing and this user cannot install them;" \
	      "ask an administrator for: apt-get install chromium chromium-driver (Debian/Ubuntu)" >&2; exit 1; }; \
	    $(SUDO) apt-get update -q && $(SUDO) $(APT) chromium chromium-driver; }

tex:
	@command -v xelatex >/dev/null && command -v xindy >/dev/null && command -v latexmk >/dev/null && command -v pdftoppm >/dev/null \
	  && fc-list | grep -q "Noto Sans CJK" && kpsewhich xeCJK.sty ctexhook.sty >/dev/null || \
	  { [ "$(SUDO)" != NO ] || { echo "make: the PDF needs TeX packages this user cannot install;" \
	      "ask an administrator for: apt-get install $(TEX_PKGS)" >&2; exit 1; }; \
	    $(SUDO) apt-get update -q && $(SUDO) $(APT) $(TEX_PKGS); }

pdf: $(STAMP) assets status calculator repository tex
	rm -rf _build/latex
	$(BIN)/jupyter-book build . --builder pdflatex -W -n --keep-going
	@ls -l _build/latex/book.pdf

cheatsheet: tex
	mkdir -p _build/handouts
	cd handouts && latexmk -xelatex -interaction=nonstopmode -halt-on-error -outdir=../_build/handouts cheatsheet.tex
	@ls -l _build/handouts/cheatsheet.pdf

# Screenshots of every page (desktop and phone width) and >= 10 PDF pages as PNG, under
# _build/screenshots; fails when a code cell, output, table or equation is cut off.
screenshots: $(STAMP) chromium
	$(BIN)/python scripts/screenshots.py

# Per chapter (_build/handouts/<chapter>/): handout, exercise sheet, solutions sheet, each as
# A4 and US Letter PDF (headless Chromium), key formulas on page 1; fails when a table, code
# block, formula or figure is wider than the printed column.  Needs MathJax (assets), not
# the site.
handouts: $(STAMP) assets chromium
	$(BIN)/python scripts/handouts.py --all --pdf --check

# nbval runs twice: with the CPU's own kernels in the checkout, then on a copy of chapters/
# outside it (each notebook alone, as Colab opens it) with ATen, MKL and oneDNN held to their
# oldest x86 code paths, which round differently from AVX2 and AVX-512 alike; an output that
# depends on the CPU's vector width fails one of the two (Chapter 0, "How the book prints
# numbers").  The variables are ignored where they do not apply (Arm).
LOW_ISA := ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41

test: $(STAMP)
	$(BIN)/python -m pytest tests chapters --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider -v
	d=$$(mktemp -d) && cp -r chapters tests/nbval_sanitize.cfg "$$d/" && cd "$$d" && \
	  $(LOW_ISA) $(CURDIR)/$(BIN)/python -m pytest chapters --nbval --nbval-sanitize-with nbval_sanitize.cfg \
	    -p no:cacheprovider -q -c /dev/null --rootdir "$$d"; rc=$$?; rm -rf "$$d"; exit $$rc

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -q -m "not slow"

unit: $(STAMP)
	$(BIN)/python -m pytest tests -q

nbval: $(STAMP)
	$(BIN)/python -m pytest $(NB) --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

execute: $(STAMP)
	$(BIN)/python scripts/execute_notebooks.py --jobs $(JOBS) $(NB)

lab: $(STAMP)
	$(BIN)/python -m pip install -q "jupyterlab>=4,<5"
	$(BIN)/jupyter lab chapters

lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q --extra-index-url $(TORCH_CPU_INDEX) "torch==$(TORCH_VERSION)" -e ".[book,test]"
	.venv-lock/bin/python scripts/lock.py .venv-lock/bin/python
	rm -rf .venv-lock

clean:
	rm -rf _build build $(VENDOR)
