# Two commands on a fresh machine: `make run` (the main job on the built-in data) and `make test`.
# Both create .venv when missing and install the project into it.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean chromium

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing the project into $(VENV) (first time: a few minutes)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither" || true
	@$(PY) -c "import torch, torchvision, timm, ray, mlflow, albumentations, optuna" || (echo "install failed" && exit 1)
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) -m search.run $(ARGS)

# The browser test (tests/search/test_mlflow_ui.py) drives Debian's chromium; as root with apt-get,
# install it once, quietly. Without it that test skips, so a failed install never fails the build.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& echo "installing chromium for the browser test (once)" \
		&& (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } \
		|| echo "chromium not installed: the browser test will skip"

test: install chromium
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf runs
