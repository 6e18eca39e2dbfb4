"""Builds ckptpeek's two optional Cython extensions from ``native/``:

  native/unpickle/_pickle_vm_c.pyx -> ckptpeek.unpickle._pickle_vm_c  (the pickle engine)
  native/io/_zipdir_c.pyx          -> ckptpeek.io._zipdir_c           (the ZIP directory parser)


Everything else is in pyproject.toml. Environment switches (read at build time):
  CKPTPEEK_NO_EXTENSIONS=1       build no extension (pure-Python install)
  CKPTPEEK_REQUIRE_EXTENSIONS=1  a failed or impossible build fails the install
Otherwise a missing Cython or compiler, or a failed compile, is a warning and the
package installs with the pure engine.
"""

import importlib.util
import os
import pathlib
import sys

from setuptools import setup

HERE = pathlib.Path(__file__).parent


def _truthy(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def _extensions():
    if _truthy("CKPTPEEK_NO_EXTENSIONS"):
        return []
    required = _truthy("CKPTPEEK_REQUIRE_EXTENSIONS")
    try:
        from Cython.Build import cythonize  # noqa: PLC0415 - optional: no Cython, no extension
        from setuptools import Extension  # noqa: PLC0415
    except ImportError:
        if required:
            raise
        print(
            "ckptpeek: Cython is not installed; installing the pure-Python engine only",
            file=sys.stderr,
        )
        return []
    # the opcode table is the single specification: generate the Cython enum from it
    # (loaded as files, not through the package: a build environment has no ckptpeek;
    # the table's digest covers the limits, which opcodes.py imports from ckptpeek.limits)
    opcodes = None
    for name, rel in (
        ("ckptpeek.limits", ("limits.py",)),
        ("_ckptpeek_opcodes", ("unpickle", "opcodes.py")),
    ):
        spec = importlib.util.spec_from_file_location(name, HERE.joinpath("src", "ckptpeek", *rel))
        opcodes = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = opcodes  # dataclasses look their module up while building
        spec.loader.exec_module(opcodes)
    opcodes.write_pxi(str(HERE / "native" / "unpickle" / "_opcodes.pxi"))
    flags = ["-O2"] if os.name != "nt" else []
    exts = [
        Extension(
            "ckptpeek.unpickle._pickle_vm_c",
            ["native/unpickle/_pickle_vm_c.pyx"],
            extra_compile_args=flags,
        ),
        Extension("ckptpeek.io._zipdir_c", ["native/io/_zipdir_c.pyx"], extra_compile_args=flags),
    ]
    exts = cythonize(exts, language_level=3, quiet=True)
    for ext in exts:
        ext.optional = not required  # cythonize() drops Extension(optional=...): set it after
    return exts


setup(ext_modules=_extensions())
