# The two commands of the README:
#   make run    install (first time) and run the relay on config/relay.yaml
#   make test   install (first time) and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean browser

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "python3 (3.11 or newer) is required"; exit 1; }
	@$(PYTHON) -c 'import ctypes.util, sys; sys.exit(0 if ctypes.util.find_library("magic") else 1)' \
	  || { echo "installing libmagic (system package)"; \
	       (apt-get update -qq && apt-get install -y -qq libmagic1) >/dev/null \
	       || { echo "please install libmagic (Debian/Ubuntu: apt-get install libmagic1)"; exit 1; }; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,fast]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/relay serve

test: $(STAMP) browser
	$(BIN)/pytest -q

# The console's tests drive a real Chromium: Debian's, installed when missing.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null \
	  || { echo "installing chromium and chromium-driver (system packages)"; \
	       (apt-get update -qq && apt-get install -y -qq chromium chromium-driver) >/dev/null \
	       || { echo "please install chromium and chromium-driver (Debian: apt-get install chromium chromium-driver)"; exit 1; }; }

lint: $(STAMP)
	$(BIN)/ruff check relay tests
	$(BIN)/ruff format --check relay tests
	$(BIN)/mypy relay

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var
