# engagement-loops — the index of what a developer can do. See README.md.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export FLASK_APP := wsgi

.PHONY: install lock run test lint format pytest test-sqlite browser assets test-postgres bench bench-quick bench-scale reliability clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip 2>/dev/null
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install the app with its dev tools, at the versions in constraints.txt

lock: $(STAMP) ## move every package to its newest release pyproject.toml allows, and pin that in constraints.txt
	$(BIN)/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[dev]'
	@{ grep '^#' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt.new
	@mv constraints.txt.new constraints.txt
	@echo "constraints.txt rewritten: run make test before committing it"

run: $(STAMP) ## everything up on SQLite + local Redis, demo data, prints URL and logins
	@bash scripts/run.sh

lint: $(STAMP) ## ruff (lint + format check), mypy and the import-layer contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# PYTEST_WORKERS=n: n pytest-xdist workers, a test module each at a time; TEST_REDIS_URL and
# RELIABILITY_REDIS_URL must then list one Redis URL a worker (README, "Tests").
XDIST = $(if $(PYTEST_WORKERS),-n $(PYTEST_WORKERS) --dist loadfile)

pytest: $(STAMP) ## the test suite only, on DATABASE_URL's PostgreSQL server or SQLite when unset
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

test: lint pytest ## lint, type-check and the whole test suite

test-sqlite: $(STAMP) ## the suite on SQLite, whatever DATABASE_URL says
	env -u DATABASE_URL $(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

browser: $(STAMP) ## only the browser tests (real Chromium); screenshots in test-artifacts/screenshots/
	$(BIN)/pytest -m browser $(PYTEST_ARGS)

assets: ## re-vendor htmx and Swagger UI from the npm registry (versions pinned in package.json) into static/vendor/
	npm ci --no-audit --no-fund
	cp node_modules/htmx.org/dist/htmx.min.js \
	  static/vendor/htmx-$$(node -p "require('./node_modules/htmx.org/package.json').version").min.js
	SWAGGER=static/vendor/swagger-ui-$$(node -p "require('./node_modules/swagger-ui-dist/package.json').version") && \
	  mkdir -p $$SWAGGER && \
	  cp node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css \
	    node_modules/swagger-ui-dist/LICENSE node_modules/swagger-ui-dist/NOTICE $$SWAGGER/

reliability: $(STAMP) ## 200-client load test (60 s) and a larger schemathesis run; docs/RELIABILITY.md
	LOAD_SECONDS=$${LOAD_SECONDS:-60} FUZZ_MAX_EXAMPLES=$${FUZZ_MAX_EXAMPLES:-200} \
	  $(BIN)/pytest -s tests/reliability/test_load.py tests/reliability/test_fuzz_api.py $(PYTEST_ARGS)

# Each part waits for a quiet machine (1-minute load <= 1.0) and refuses to start after
# BENCH_LOAD_WAIT_S (300) busy seconds; BENCH_FLAGS=--force runs anyway (figures not valid).
bench: $(STAMP) ## full scale on PostgreSQL (1,000 tenants, 10M signals) + SQLite; docs/PERFORMANCE.md
	$(BIN)/python -m bench.run --scale full $(BENCH_FLAGS)

bench-quick: $(STAMP) ## the same benchmarks at a small scale (a few minutes on a quiet machine)
	$(BIN)/python -m bench.run --scale quick $(BENCH_FLAGS)

bench-scale: $(STAMP) ## tune, mark-read, dashboard at 10M/60 days vs 50M/400 days; a month's prune under load
	$(BIN)/python -m bench.scale $(BENCH_FLAGS)

clean:
	rm -rf $(VENV) instance .mypy_cache .ruff_cache .pytest_cache test-artifacts
