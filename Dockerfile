# Container for GPU runs: CUDA toolkit image + PyTorch (CUDA wheels from PyPI) + llama.cpp built
# with CUDA, installed by build.sh into /opt/harness/.venv. Runs as a non-root user whose ids
# launch.sh sets to the host user's, so files written to mounted folders belong to that user.
# No secrets and no model weights are baked in: models, data and results are mounted (launch.sh).
FROM nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04

ARG USER_ID=1000
ARG GROUP_ID=1000
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    PIP_NO_CACHE_DIR=1

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*

# The base image has a user 'ubuntu' with id 1000; replace it by ours with the host's ids.
RUN (userdel -r ubuntu || true) \
    && groupadd -o -g "${GROUP_ID}" harness \
    && useradd -o -l -m -u "${USER_ID}" -g "${GROUP_ID}" harness \
    && mkdir -p /opt/harness /models /data /results \
    && chown harness:harness /opt/harness /models /data /results

WORKDIR /opt/harness
COPY --chown=harness:harness . .
USER ${USER_ID}:${GROUP_ID}

# llama.cpp links against the CUDA driver stub at build time; the real driver comes from the host.
RUN LIBRARY_PATH=/usr/local/cuda/lib64/stubs \
    CMAKE_ARGS="-DGGML_CUDA=on" \
    EXTRAS=llamacpp,hf,openai,gpu,plots \
    bash build.sh

ENV PATH=/opt/harness/.venv/bin:${PATH}
CMD ["bash", "run_accuracy.sh"]
