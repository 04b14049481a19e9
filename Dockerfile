# The sketchsearch image: CUDA PyTorch (PyPI's Linux wheels bundle CUDA), Ray with its dashboard and
# job API, MLflow with PostgreSQL support, and the project itself. docker-compose.yml runs every
# service except PostgreSQL from it; the host needs only the NVIDIA driver and container toolkit.
#
#   docker build -t sketchsearch .
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 -t sketchsearch .
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

# Empty: the CUDA build of torch that PyPI serves for Linux x86_64. Set it to pick the CUDA version
# your driver supports (PyTorch's index, as in the example above).
ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RUNS_DIR=/runs \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
# (No NVIDIA_VISIBLE_DEVICES here: which GPUs a container sees is the compose reservation's call.
# `utility` brings libnvidia-ml, through which Ray counts the GPUs it was given.)

# procps: ps and top for looking inside a running node; libglib2.0-0: OpenCV.
RUN apt-get update \
    && apt-get install -y --no-install-recommends procps libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, in a layer of their own, so editing the code does not reinstall torch.
COPY pyproject.toml README.md ./
RUN mkdir -p search trainables ensemble \
    && touch search/__init__.py trainables/__init__.py ensemble/__init__.py \
    && if [ -n "$TORCH_INDEX_URL" ]; then pip install torch torchvision --index-url "$TORCH_INDEX_URL"; fi \
    && pip install '.[service]' \
    && pip uninstall -y sketchsearch \
    && rm -rf search trainables ensemble build *.egg-info

# Editable, so spaces/ (read from beside the search package) is found and a bind-mounted checkout
# over /app runs as it is.
COPY . .
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 1000 sketch \
    && mkdir -p /runs /mlartifacts \
    && chown sketch:sketch /runs /mlartifacts

# Named volumes mounted here start with this ownership, so the non-root user can write them.
USER sketch
VOLUME ["/runs"]

CMD ["python", "-m", "search.run", "--help"]
