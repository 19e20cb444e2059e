# The images of homefeed-candidates, built by `make image` and `make serving-image` (docs/deploy.md):
#
#   pipeline (default target)  every Kubeflow component runs in it; `candidates` is its entrypoint.
#                              The whole stack of requirements.lock, less the test tools.
#   serving                    `candidates serve` only: TensorFlow (CPU build), FAISS, FastAPI,
#                              uvicorn, Redis client; no Beam, BigQuery, kfp (requirements-serving.txt).
#
#   DOCKER_BUILDKIT=1 docker build --target pipeline -t homefeed-candidates:0.1.0 .
#   DOCKER_BUILDKIT=1 docker build --target serving  -t homefeed-candidates-serving:0.1.0 .
#
# Build arguments: BASE_IMAGE (a Debian bookworm image with Python 3.11 and pip; `make base-image`
# builds one from Debian's packages where no container registry is reachable), UV_VERSION.
# Behind a TLS-intercepting proxy, pass its CA bundle as the BuildKit secret `ca_cert`
# (`--secret id=ca_cert,src=/path/ca.pem`; `make` does it from PIP_CERT or SSL_CERT_FILE): it is
# mounted for the download steps only and is in no layer. http(s)_proxy build arguments are
# Docker's predefined ones and are not recorded in the image either.
#
# The project's sources are bind-mounted for the install, not copied: the image holds the
# installed packages only (no sources, tests, caches or build files). Few layers come after the
# big dependency layer, since some storage drivers (vfs) copy the whole tree for each layer.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_NO_CACHE=1 \
    UV_SYSTEM_PYTHON=1 \
    TF_CPP_MIN_LOG_LEVEL=2
# libgomp1: FAISS's OpenMP runtime. The service and the tasks run as this unprivileged user.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin homefeed
WORKDIR /home/homefeed

# uv, in a stage of its own: bind-mounted for the installs, so no image carries it.
FROM base AS uv
ARG UV_VERSION=0.13.9
RUN --mount=type=secret,id=ca_cert \
    if [ -s /run/secrets/ca_cert ]; then export PIP_CERT=/run/secrets/ca_cert; fi \
    && python -m pip install --no-cache-dir --target /opt/uv "uv==${UV_VERSION}"


# ---------------------------------------------------------------------------------------------
FROM base AS serving
# Left out, as a server compiles nothing against these libraries: TensorFlow's C++ headers
# (~290 MB, for custom ops), libclang (~60 MB, TF's source tooling, never imported), pyarrow's
# headers, and the test suites of pyarrow and numpy.
RUN --mount=type=secret,id=ca_cert \
    --mount=type=bind,from=uv,source=/opt/uv,target=/opt/uv \
    --mount=type=bind,source=requirements-serving.txt,target=/tmp/build/requirements-serving.txt \
    if [ -s /run/secrets/ca_cert ]; then export SSL_CERT_FILE=/run/secrets/ca_cert; fi \
    && /opt/uv/bin/uv pip install -r /tmp/build/requirements-serving.txt \
    && /opt/uv/bin/uv pip uninstall libclang \
    && site="$(python -c 'import importlib.util as u, os; print(os.path.dirname(u.find_spec("numpy").submodule_search_locations[0]))')" \
    && rm -rf "$site/tensorflow/include" "$site/pyarrow/include" "$site/pyarrow/tests" "$site"/numpy/*/tests
RUN --mount=type=secret,id=ca_cert \
    --mount=type=bind,from=uv,source=/opt/uv,target=/opt/uv \
    --mount=type=bind,target=/src,rw \
    if [ -s /run/secrets/ca_cert ]; then export SSL_CERT_FILE=/run/secrets/ca_cert; fi \
    && /opt/uv/bin/uv pip install --no-deps /src \
    && rm -rf /root/.cache /tmp/* \
    && runuser -u homefeed -- candidates serve --help >/dev/null \
    && runuser -u homefeed -- python -c "import serving.http.app, serving.store, trainer.towers.serving_model, faiss, tensorflow"
USER homefeed
EXPOSE 8080
# e.g. docker run -p 127.0.0.1:8080:8080 -v /srv/publish:/models:ro IMAGE serve --model /models --host 0.0.0.0
ENTRYPOINT ["candidates"]
CMD ["--help"]


# ---------------------------------------------------------------------------------------------
# The pipeline image: last, so a plain `docker build .` builds it.
FROM base AS pipeline
# KFP runs each lightweight component as `python3 -m kfp.dsl.executor_main` with the component's
# source: kfp and the project's packages must be installed; nothing is installed when a task starts.
RUN --mount=type=secret,id=ca_cert \
    --mount=type=bind,from=uv,source=/opt/uv,target=/opt/uv \
    --mount=type=bind,source=requirements.lock,target=/tmp/build/requirements.lock \
    --mount=type=bind,source=docker/image-excludes.txt,target=/tmp/build/image-excludes.txt \
    if [ -s /run/secrets/ca_cert ]; then export SSL_CERT_FILE=/run/secrets/ca_cert; fi \
    && /opt/uv/bin/uv pip install -r /tmp/build/requirements.lock --excludes /tmp/build/image-excludes.txt
# The local BigQuery emulator's DuckDB needs the spatial extension: installed now for the
# image's user, from the PyPI wheel, so no task ever downloads it.
RUN --mount=type=secret,id=ca_cert \
    --mount=type=bind,from=uv,source=/opt/uv,target=/opt/uv \
    --mount=type=bind,target=/src,rw \
    if [ -s /run/secrets/ca_cert ]; then export SSL_CERT_FILE=/run/secrets/ca_cert; fi \
    && /opt/uv/bin/uv pip install --no-deps /src \
    && rm -rf /root/.cache /tmp/* \
    && runuser -u homefeed -- python -c "import homefeed, homefeed_cli, components, pipeline, trainer, serving, sql, kfp" \
    && runuser -u homefeed -- candidates --help >/dev/null \
    && runuser -u homefeed -- python -c "from components.extract.warehouse import ensure_spatial_extension as e; e()"
USER homefeed
# KFP overrides the command of each task; on its own the image runs the CLI.
ENTRYPOINT ["candidates"]
CMD ["--help"]
