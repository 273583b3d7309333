# Two commands matter: `make reports` and `make test`. Both set up .venv first when needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# A torch build installed before the project, so the `torch>=` range in pyproject is already met.
# GPU users: keep the default (PyPI's Linux wheel has CUDA) or pick one, e.g.
#   make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH  ?= torch==2.13.0
EXTRAS ?= dev
STAMP  := $(VENV)/.mmduet-setup
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup browser test test-fast reports lab lint format clean gpu-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m ipykernel install --sys-prefix --name mmduet --display-name "Python (mmduet)" >/dev/null
	@touch $@

# Chromium for the demo's real-browser test (Debian's package; Playwright drives it, nothing is downloaded
# at test time). Installed once when missing and this user can use apt; otherwise that one test skips.
CHROMIUM := $(shell command -v chromium || command -v chromium-browser || command -v google-chrome)
browser:
ifeq ($(CHROMIUM),)
	@if [ "$$(id -u)" = 0 ]; then APT=""; elif sudo -n true 2>/dev/null; then APT="sudo"; else APT=none; fi; \
	if [ "$$APT" = none ] || ! command -v apt-get >/dev/null; then \
	  echo "chromium not found and apt-get not usable: the browser test will skip (install chromium)"; \
	else echo "installing chromium (apt-get) for the browser test"; \
	  { $$APT apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$APT apt-get install -y -qq chromium >/dev/null; } \
	    || echo "could not install chromium: the browser test will skip"; fi
else
	@true
endif

# Everything but GPU tests; slow ones included (CI runs exactly this).
test: setup browser
	$(PY) -m pytest -m "not gpu"

# The quick inner loop: slow and GPU tests deselected (pyproject's default).
test-fast: setup
	$(PY) -m pytest

# Every notebook on its defaults (the toy world) -> reports/ (git-ignored: generated, never committed).
reports: setup
	$(PY) -m mmduet_core reports --notebooks notebooks --out reports

# The first command on a GPU machine: a 7B-shaped model with random weights (nothing downloaded): frames/s,
# peak memory, bf16/fp32 and flash/sdpa agreement, plus the load report when the real weights are present.
gpu-check: setup
	$(PY) -m mmduet_core doctor --gpu

lab: setup
	$(VENV)/bin/jupyter lab notebooks

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/nbstripout --verify notebooks/*.ipynb

format: setup
	$(VENV)/bin/ruff format mmduet_core tests
	$(VENV)/bin/nbstripout notebooks/*.ipynb

# Removes what `make reports` wrote (all of reports/ is generated and git-ignored).
clean:
	find reports -mindepth 1 -maxdepth 1 ! -name .gitkeep -exec rm -rf {} +
