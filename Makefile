# The two commands a new user needs (see README):
#   make demo   - whole pipeline locally on generated sample data, then serve and query it
#   make test   - the full test suite (what CI runs)
# Both create .venv on first use and install the project into it; nothing else is needed.

PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
DEMO   ?= demo

.PHONY: demo test test-quick test-transform-parallel lint format golden venv clean help image serving-image base-image
help:
	@echo "make demo        run the whole pipeline locally on sample data, then serve and query it"
	@echo "make test        run every test (as CI does), on TEST_WORKERS=2 processes; the 25 slowest listed"
	@echo "make test-quick  skip the slow and end-to-end tests"
	@echo "make lint        formatter check, linter, type checker, import-layer contracts (part of make test)"
	@echo "make format      apply the formatter and the linter's safe fixes"
	@echo "make test-transform-parallel  the transform on 1 and 2 DirectRunner workers: same outputs"
	@echo "make golden      rewrite tests/pipeline/golden/ (the compiled pipeline) after a meant change"
	@echo "make image       build the pipeline image $(IMAGE) from $(BASE_IMAGE) (docs/deploy.md)"
	@echo "make serving-image  build the service's image $(SERVING_IMAGE)"
	@echo "make base-image  build $(LOCAL_BASE_IMAGE), a stand-in for the base from Debian packages (no registry needed)"

venv: $(STAMP)
$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	# Bytecode compiled once at install: where PYTHONDONTWRITEBYTECODE is set (as on the dev VM), every
	# process otherwise recompiles what it imports (TensorFlow + Beam + TFT: 13 vs 5 CPU-s an import).
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode -r requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m homefeed_cli.demo --workdir $(DEMO)

# Both cores of the CI machine: tests/conftest.py keeps each module (a few folders: whole) on one
# worker and starts the longest first. The 25 slowest tests close the report. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
PARALLEL      = $(if $(filter-out 0 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder)

test: lint
	$(BIN)/python -m pytest -p no:cacheprovider $(PARALLEL) --durations=25

test-quick: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider $(PARALLEL) -m "not slow and not e2e"

# The code's own checks: formatting, lint, types, and the import layers of pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test-transform-parallel: $(STAMP)
	$(BIN)/python -m pytest -p no:cacheprovider tests/transform/test_parallel_direct_runner.py

golden: $(STAMP)
	$(BIN)/python -m pipeline.compile --golden

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache

# ---------------------------------------------------------------------------------------------
# Container images (Dockerfile, docs/deploy.md). BuildKit is needed (build secrets, bind mounts):
# a docker client with buildx, or Debian's docker.io client (BuildKit built in) at /usr/bin/docker
# when the `docker` on PATH lacks buildx.
VERSION       := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' homefeed/__init__.py)
IMAGE         ?= homefeed-candidates:$(VERSION)
SERVING_IMAGE ?= homefeed-candidates-serving:$(VERSION)
BASE_IMAGE    ?= python:3.11-slim-bookworm
LOCAL_BASE_IMAGE ?= homefeed-base:bookworm
DOCKER        ?= $(shell if docker buildx version >/dev/null 2>&1 || ! test -x /usr/bin/docker; then echo docker; else echo /usr/bin/docker; fi)
# The TLS proxy's CA bundle, if any: a BuildKit secret, mounted for the download steps only.
CA_CERT       ?= $(or $(PIP_CERT),$(SSL_CERT_FILE))
# The host's HTTP proxy, if any: Docker's predefined build arguments, kept out of the image's history.
PROXY_VARS    := http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY
DOCKER_BUILD   = DOCKER_BUILDKIT=1 $(DOCKER) build --build-arg BASE_IMAGE=$(BASE_IMAGE) \
                 $(if $(CA_CERT),--secret id=ca_cert$(comma)src=$(CA_CERT)) \
                 $(foreach v,$(PROXY_VARS),$(if $($(v)),--build-arg $(v))) $(DOCKER_BUILD_ARGS)
comma := ,

image:
	$(DOCKER_BUILD) --target pipeline -t $(IMAGE) .

serving-image:
	$(DOCKER_BUILD) --target serving -t $(SERVING_IMAGE) .

base-image:
	DOCKER=$(DOCKER) docker/build-base-image.sh $(LOCAL_BASE_IMAGE)
