# Two commands do all set-up on a fresh machine: `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.spikedistill-installed
RUN_DIR ?= runs/quickstart

.PHONY: install quickstart test clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 first: it is the CPU wheel on disk; anything looser downloads a CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps "sweeps>=0.3"  # wandb's sweep engine; see pyproject's sweeps extra
	$(PY) -m pip install --quiet --no-deps norse==1.1.0 nirtorch==2.6 || echo "norse not installed: tests/test_nir.py skips its simulator check"  # independent NIR reader (test extra; --no-deps keeps torch)
	# bytecode up front: with PYTHONDONTWRITEBYTECODE set, pip skips it and every run recompiles
	# Lightning and torch (a CLI start takes ~11 s instead of ~5 s here)
	$(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $(STAMP)

install: $(STAMP)

quickstart: install
	$(VENV)/bin/spikedistill fit --config recipes/quickstart.yaml --trainer.default_root_dir $(RUN_DIR)

# pytest exits 5 when it collects no tests; that is not a failure of the suite.
test: install
	$(PY) -m pytest -q -p no:cacheprovider -n auto; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

clean:
	rm -rf runs lightning_logs wandb .pytest_cache
