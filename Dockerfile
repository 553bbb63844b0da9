# localassist serve in a container: `docker build -t localassist .`
# GPU: docker build --build-arg CMAKE_ARGS="-DGGML_CUDA=on" --build-arg BASE=nvidia/cuda:12.4.1-devel-ubuntu22.04 ...
# (and a runtime base with the CUDA libraries; see docs/serve.md, Container).

# --- build: llama-cpp-python is compiled here, with the compiler and cmake that the runtime image leaves out
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/*
ARG CMAKE_ARGS=""
ENV CMAKE_ARGS=${CMAKE_ARGS}
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY models ./models
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir '.[server,starter]'

# --- runtime: the virtual environment only, run by an unprivileged user
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 localassist \
 && mkdir -p /data /models \
 && chown localassist:localassist /data /models
COPY --from=build /opt/venv /opt/venv
# /data: settings, API keys (hashes), the call log. /models: the Hugging Face cache.
ENV PATH=/opt/venv/bin:$PATH \
    LOCALASSIST_HOME=/data \
    HF_HOME=/models \
    LOCALASSIST_SERVE_HOST=0.0.0.0 \
    LOCALASSIST_SERVE_PORT=8080
VOLUME ["/data", "/models"]
USER localassist
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('LOCALASSIST_SERVE_PORT', '8080'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=4).status != 200)"]
# A non-loopback bind needs keys: LOCALASSIST_API_KEYS=name:key,... or a secret file
# (LOCALASSIST_SERVE_KEY_FILE=/run/secrets/localassist_api_keys); without any it exits 2 and says so.
ENTRYPOINT ["localassist", "serve"]
