# The two commands a newcomer needs: `make dev` (run) and `make test` (test).
# `make dev` serves the Dagster UI on 127.0.0.1:3000 and the MLflow UI on 127.0.0.1:5000 (the
# embedded tracking store in the storage folder; links in Dagster's metadata open there).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/.dagster_home
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export AIPLATFORM_STORAGE_DIR ?= $(CURDIR)/storage
# `make dev` and `make ingest` run each run's steps one after another in the run's process: it
# loads the code location and the models once, where one process per step would load them again
# for every step (the browser tests set the same).
dev ingest: export AIPLATFORM_EXECUTION_EXECUTOR ?= in_process

.PHONY: install dev test lint format bench ingest screenshots clean

install: $(STAMP)

# torch is installed first, pinned: it takes the CPU build on disk, never a CUDA download.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# checkov in its own virtualenv: its pinned dependencies clash with the project's
# (aiplatform_dagster_tests/infra/test_checkov.py runs it offline; .checkov.yaml lists the skips).
CHECKOV_VERSION := 3.3.30
CHECKOV := .venv-checkov/bin/checkov
$(CHECKOV):
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet checkov==$(CHECKOV_VERSION)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

# Materialise the ingestion group (first run: the sample corpus) so `aiplatform search` answers,
# then serving_release, so the API on :8000 serves it.
# Runs left behind by a killed process are failed first, so their pool slots never block it.
# No daemon watches a CLI run: first fail runs whose process was killed and free their pool slots.
ingest: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m aiplatform_dagster.defs.maintenance
	$(BIN)/dagster asset materialize -m aiplatform_dagster.definitions --select 'group:ingestion'
	$(BIN)/dagster asset materialize -m aiplatform_dagster.definitions --select serving_release

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m aiplatform_dagster.defs.maintenance
	$(BIN)/aiplatform agent migrate
	@test -f $(AIPLATFORM_STORAGE_DIR)/serving/live.json || $(MAKE) ingest
	mkdir -p $(AIPLATFORM_STORAGE_DIR)/mlflow
	$(BIN)/mlflow server --host 127.0.0.1 --port 5000 \
		--backend-store-uri sqlite:///$(AIPLATFORM_STORAGE_DIR)/mlflow/mlflow.db \
		> $(AIPLATFORM_STORAGE_DIR)/mlflow/server.log 2>&1 & MLFLOW=$$!; \
	$(BIN)/aiplatform serve --host 127.0.0.1 --port 8000 \
		> $(AIPLATFORM_STORAGE_DIR)/serving.log 2>&1 & API=$$!; \
	trap 'kill $$MLFLOW $$API' EXIT INT TERM; \
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# Everything but the browser tests on two workers (a file's tests stay on one), then the
# browser tests one at a time: each drives its own `dagster dev`.
test: lint $(CHECKOV)
	$(BIN)/pytest -q -n 2 --dist loadfile -m "not browser" --durations=10
	$(BIN)/pytest -q -m browser --durations=5

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Re-run the browser test of the Dagster UI and refresh the README tour's screenshots from it.
SCREENSHOTS := aiplatform_dagster_tests/ui/screenshots
TOUR := 01-lineage 02-run-logs 03-source-documents 04-document-chunks 05-chunk-embeddings \
	06-embedding-checks 07-index-release 08-evaluation 09-sensor-run 10-evaluation-plots \
	11-automation 12-new-documents-sensor 13-training-lineage 14-training-launchpad \
	15-training-run 16-embedder-model 17-mlflow-run 18-embedder-gate 19-model-registry \
	20-agents-lineage 21-agent-registry 22-agent-table 23-agent-eval 24-agent-escalations \
	25-resume-launchpad 26-resume-run 27-serving-release 28-api-docs
screenshots: install
	$(BIN)/pytest -q aiplatform_dagster_tests/ui aiplatform_dagster_tests/serving/test_api.py
	mkdir -p $(SCREENSHOTS)
	for shot in $(TOUR); do cp test-artifacts/ui/$$shot.png $(SCREENSHOTS)/; done

bench: install
	$(BIN)/python -m aiplatform_dagster.benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DAGSTER_HOME) $(AIPLATFORM_STORAGE_DIR) .pytest_cache .ruff_cache test-artifacts
