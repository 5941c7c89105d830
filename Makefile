# The two commands: `make run` serves the app, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HTMX_VERSION := 4.0.1
AXE_VERSION := 4.14.1

.PHONY: run test check bench load screenshots vendor clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/chatapp hypercorn.toml

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

# Lint (errors and likely bugs), types (mypy over chatapp), both set in pyproject.toml, and every module
# importable; CI runs it before `make test`.
check: $(VENV)/.installed-test
	$(BIN)/ruff check chatapp tests bench scripts
	$(BIN)/mypy
	$(BIN)/python -c "import chatapp, chatapp.__main__; chatapp.create_app({})"

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-test

# Every benchmark (bounded, loopback only); the figures go to docs/benchmarks.md.
bench: $(VENV)/.installed-bench
	$(BIN)/python bench/report.py

screenshots: $(VENV)/.installed-test
	$(BIN)/python scripts/screenshots.py

# N concurrent conversations through one worker (bounded, loopback only): make load N=1000
N ?= 200
load: $(VENV)/.installed-test
	$(BIN)/python bench/load.py $(N)

# Refresh the vendored htmx (and the tests' axe-core) from the npm registry, at the pinned versions.
vendor:
	rm -rf build/htmx && mkdir -p build/htmx
	cd build/htmx && npm pack --silent htmx.org@$(HTMX_VERSION) && tar xzf htmx.org-$(HTMX_VERSION).tgz
	cp build/htmx/package/dist/htmx.min.js build/htmx/package/dist/ext/hx-sse.min.js static/vendor/
	cp build/htmx/package/LICENSE static/vendor/htmx-LICENSE
	echo "htmx.org $(HTMX_VERSION) (dist/htmx.min.js, dist/ext/hx-sse.min.js)" > static/vendor/VERSION
	# axe-core, for the accessibility tests only (tests/test_accessibility.py)
	cd build/htmx && npm pack --silent axe-core@$(AXE_VERSION) && tar xzf axe-core-$(AXE_VERSION).tgz --one-top-level=axe
	cp build/htmx/axe/package/axe.min.js tests/vendor/axe-$(AXE_VERSION).min.js
	cp build/htmx/axe/package/LICENSE tests/vendor/axe-LICENSE

clean:
	rm -rf $(VENV) build .pytest_cache
