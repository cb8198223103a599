# The harness in a container, in two variants of this one file:
#   GPU (default): CUDA base image, llama.cpp built with CUDA, PyTorch from PyPI (CUDA wheels).
#     docker build -t llm-loadgen-harness:0.1.0 .
#   CPU: any Debian/Ubuntu image with python3 (e.g. one made locally, README "Container"):
#     podman build --build-arg BASE_IMAGE=localhost/bookworm --build-arg GGML_CUDA=off -t llm-loadgen-harness:cpu .
# Installed by build.sh with run_accuracy.sh's extras (plus gpu), so the main job installs nothing at start.
# Nothing private is baked in: pip settings come as build secrets (pip-conf: a pip.conf, e.g. an index
# with credentials; pip-cert: a CA bundle), a wheel folder may be mounted at /wheels at build time
# (podman build -v DIR:/wheels:ro), and models, data and results are mounted at run time (launch.sh).
# Any run-time user (-u UID:GID) can run it; files written to /results belong to that user.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
FROM ${BASE_IMAGE}

# LLAMA_CPU: the CPU features llama.cpp is built for (build.sh); portable suits an image that moves.
ARG GGML_CUDA=on
ARG LLAMA_CPU=portable
ARG EXTRAS=llamacpp,hf,openai,gpu
# The same values at run time, so build.sh (run by run_accuracy.sh) finds its stamp and installs nothing.
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    PIP_NO_CACHE_DIR=1 \
    EXTRAS=${EXTRAS} \
    LLAMA_CPU=${LLAMA_CPU} \
    CMAKE_ARGS=-DGGML_CUDA=${GGML_CUDA} \
    HOME=/home/harness \
    PATH=/opt/harness/.venv/bin:${PATH}

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv python3-dev \
       build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/harness
COPY . .

# llama.cpp links against the CUDA driver stub at build time; the real driver comes from the host.
# The embedded model and the demo data set are made here, so a run only reads them.
RUN --mount=type=secret,id=pip-conf --mount=type=secret,id=pip-cert \
    mkdir -p "$HOME/.cache" \
    && if [ -s /run/secrets/pip-conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip-conf; fi \
    && if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && if [ -d /wheels ]; then export PIP_FIND_LINKS=/wheels; fi \
    && LIBRARY_PATH=/usr/local/cuda/lib64/stubs bash build.sh \
    && .venv/bin/python -m inputs.demo \
    && rm -rf /root/.cache \
    && mkdir -p /models /data /results \
    && ln -s /results output-logs \
    && chmod -R a+rX /opt/harness "$HOME" \
    && find "$HOME" data -type d -exec chmod 1777 {} + \
    && chmod 1777 /results

# Results land in the mounted /results (output-logs is a link to it).
CMD ["bash", "run_accuracy.sh"]
