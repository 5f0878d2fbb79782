PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_WS ?= demo_workspace

.PHONY: test test-slow typecheck docker-test slurm-test tao-test demo lint venv browser-check clean

$(BIN)/deft: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(BIN)/deft

venv: $(BIN)/deft

lint: venv
	$(BIN)/ruff check src tests bench

# mypy --strict on src/ (settings in pyproject.toml [tool.mypy]).
typecheck: venv
	$(BIN)/mypy

# pytest runs on every core (pytest-xdist; PYTEST_JOBS=0 runs in one process). `make test` leaves out the tests
# marked `slow` (real local-backend training, whole-loop runs); `make test-slow` runs them, and CI runs both.
# The slow tier keeps each file on one worker (--dist loadfile): its module fixtures (a local Ray cluster, a
# trained model, an undisturbed reference run) are built once, not once per worker.
PYTEST_JOBS ?= auto

test: venv
	$(BIN)/ruff check src tests bench
	$(MAKE) typecheck
	$(BIN)/python -m pytest -n $(PYTEST_JOBS) -m "not slow"

test-slow: venv
	$(BIN)/python -m pytest -n $(PYTEST_JOBS) --dist loadfile -m slow

# The real-engine tier: installs Docker Engine if missing (root), starts dockerd if none answers, builds the
# local TAO stand-in image (cached), runs tests/engine against it. Skips, saying why, where it cannot.
docker-test: venv
	PY=$(BIN)/python .ci/docker-test

# The Slurm tier: installs slurm-wlm + munge if missing (root), starts a one-node cluster on localhost, runs the
# loop with --backend slurm and its faults (tests/slurm). Skips, saying why, where it cannot.
slurm-test: venv
	PY=$(BIN)/python .ci/slurm-test

# The real-TAO tier: NVIDIA's own TAO 7.3.0 (nvidia-tao-pytorch, nvidia-tao-ds from PyPI) on CPU in an image
# built without a registry (docker/tao-real, cached per machine), driven by deft's docker backend (tests/tao_real).
tao-test: venv
	PY=$(BIN)/python .ci/tao-test

demo: venv
	$(BIN)/deft demo-data --out $(DEMO_WS) --size small --seed 7 --force
	$(BIN)/deft run --workspace $(DEMO_WS) --backend local --yes

browser-check: venv
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	$(BIN)/python bench/browser_check.py

clean:
	rm -rf $(VENV) $(DEMO_WS)
