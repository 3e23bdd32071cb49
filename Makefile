# queue-worker: `make demo` to watch it work, `make test` for the whole suite.
# Every target installs what it needs into .venv first; nothing has to be running beforehand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
REQUIREMENTS := requirements-dev.txt template/python3-jetstream/requirements.txt queue-worker/requirements.txt queue-worker/requirements-tracing.txt
WORKERS ?= 2

.PHONY: install prometheus dashboards demo worker bench test test-unit test-e2e lint format typecheck shrinkwrap clean

install: $(STAMP) $(BIN)/queue-worker

$(STAMP): $(REQUIREMENTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@# The runtime is imported as in the image (`import runtime`), so the venv sees the template folder.
	$(BIN)/python -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "python3-jetstream.pth").write_text(str(pathlib.Path("template/python3-jetstream").resolve()) + "\n")'
	touch $@

## The operator's command-line tool, as the image has it (function/bin on PATH): .venv/bin/queue-worker.
$(BIN)/queue-worker: queue-worker/bin/queue-worker $(STAMP)
	printf '#!%s\nimport runpy\nrunpy.run_path("%s", run_name="__main__")\n' "$(abspath $(BIN))/python" "$(abspath $<)" > $@
	chmod +x $@

## Debian's prometheus and promtool (dashboard and alert tests), and iproute2's ip and tc (the
## partition tests' network namespaces); needs root, as CI and these machines have.
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
	@command -v ip >/dev/null && command -v tc >/dev/null || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2; }

## Regenerate dashboards/queue-worker.json (build.py) and the PrometheusRule (rules.py, from alerts.yml).
dashboards: $(STAMP)
	$(BIN)/python dashboards/build.py
	$(BIN)/python dashboards/rules.py

## A local run end to end: nats-server, sample functions, a callback receiver and the worker.
demo: $(STAMP)
	$(BIN)/python -m demo

## The worker in the foreground, configured like stack.yml: nats_host, gateway_url, port, ...
worker: $(STAMP)
	handler_dir=queue-worker $(BIN)/python template/python3-jetstream/index.py

## The benchmark: prints a table, writes bench/results.json and draws bench/*.png (17-25 minutes on two cores, with valgrind and Go).
bench: $(STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	$(BIN)/python -m bench

## Lint, type checks, unit and end-to-end tests.
test: install lint typecheck prometheus
	$(BIN)/python -m pytest -n $(WORKERS) tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-e2e: install prometheus
	$(BIN)/python -m pytest -n $(WORKERS) tests/e2e tests/dashboards

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint --failure-threshold info template/python3-jetstream/Dockerfile

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## The build context as `faas-cli build --shrinkwrap` makes it: build/queue-worker.
shrinkwrap: $(STAMP)
	$(BIN)/python -m harness.shrinkwrap stack.yml

## mypy --strict on the runtime and the handler together, as they sit in the image.
typecheck: shrinkwrap
	cd build/queue-worker && ../../$(BIN)/mypy --strict --config-file ../../pyproject.toml index.py runtime function

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache .hypothesis
