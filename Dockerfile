# The image every Kubeflow component of homefeed-candidates runs in.
#
#   docker build -t homefeed-candidates:0.1.0 .
#   docker tag homefeed-candidates:0.1.0 REGISTRY/homefeed-candidates:0.1.0 && docker push REGISTRY/...
#   candidates pipeline submit --host URL --param image=REGISTRY/homefeed-candidates:0.1.0 ...
#
# The components are KFP "lightweight" Python components: KFP passes each one's source to
# `python3 -m kfp.dsl.executor_main`, which needs kfp in the image (installed from requirements.lock)
# and imports the project's packages (installed below). Nothing is installed when a task starts.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# libgomp: FAISS's OpenMP runtime. redis-server is not needed here (the service talks to a shared one).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/homefeed

# Dependencies first, in their own layer: they change far less often than the code.
COPY requirements.lock ./
RUN python -m pip install uv \
    && uv pip install --system -r requirements.lock

COPY pyproject.toml README.md ./
COPY homefeed ./homefeed
COPY components ./components
COPY pipeline ./pipeline
COPY trainer ./trainer
COPY serving ./serving
COPY sql ./sql
RUN uv pip install --system --no-deps . \
    && python -c "import homefeed, components, pipeline, trainer, serving, sql, kfp" \
    && candidates --help >/dev/null

# Not root inside the pod.
RUN useradd --create-home --uid 1000 homefeed
USER homefeed
# The local BigQuery emulator's DuckDB needs the spatial extension: install it now, from the PyPI
# wheel, so no task ever downloads it.
RUN python -c "from components.extract.warehouse import ensure_spatial_extension; ensure_spatial_extension()"

# KFP overrides the command for each component; on its own the image runs the CLI
# (e.g. `docker run IMAGE serve --model /models --host 0.0.0.0`).
ENTRYPOINT ["candidates"]
CMD ["--help"]
