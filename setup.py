"""Builds bertqa._native, the C++ int8 Linear of backend 'customcpu' (sources and notes in csrc/).

Everything else is in pyproject.toml. The extension links no PyTorch: pybind11 over NumPy
buffers, OpenMP for threads. It is optional: where it does not compile, `pip install .` still
installs the package, and backend 'customcpu' reports "native extension not built".
"""
from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

native = Pybind11Extension(
    "bertqa._native",
    sorted(glob("csrc/*.cpp")),
    depends=sorted(glob("csrc/*.h")),
    include_dirs=["csrc"],
    cxx_std=17,
    # No -march: the ISA paths carry target attributes and are picked at run time.
    # -ffp-contract=off: no silent FMA in the epilogue, so y matches the reference's rounding.
    extra_compile_args=["-O3", "-fopenmp", "-ffp-contract=off"],
    extra_link_args=["-fopenmp"],
    optional=True,
)

setup(ext_modules=[native], cmdclass={"build_ext": build_ext})
