"""Build glue: setuptools asks, `zig build` (build.zig) builds.

The native module is built by `python -m ziglang build` (the pinned `ziglang` wheel, so no system
compiler is involved) and copied where setuptools expects it; the stub for it is copied from stubs/
next to it. With the GIL the wheel is tagged cp310-abi3: one binary for CPython 3.10 and later. On
free-threaded CPython 3.13 (python3.13t) it is built for that interpreter's own ABI (zig build -Dabi=cp313t)
and tagged cp313-cp313t.

Environment:
  ZTHREAD_ZIG_TARGET   a Zig target triple for cross builds (default: this machine, baseline CPU)
  ZTHREAD_ZIG_OPTIMIZE Zig optimize mode (default ReleaseSafe)
  ZTHREAD_PLAT_NAME    the wheel's platform tag for cross builds (e.g. manylinux_2_17_aarch64)
tools/wheels.py sets these for each platform of the release.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path


def unsupported_interpreter() -> str | None:
    """Why this interpreter cannot build or run zthread, in one line naming it, or None. Checked before setuptools
    is imported: on a free-threaded build setuptools' own error is a traceback ("py_limited_api='cp310' not
    supported"), and the abi3 module would not load there anyway."""
    this = f"{sys.executable} is {platform.python_implementation()} {platform.python_version()}"
    if sys.implementation.name != "cpython":
        return f"zthread is an extension of CPython's own C API and does not run on {this}: use CPython 3.10 or later"
    if sysconfig.get_config_var("Py_GIL_DISABLED") and sys.version_info[:2] != (3, 13):
        return (f"zthread supports free-threaded CPython 3.13 only, so far: {this} (free-threaded build); "
                "use python3.13t, or a CPython 3.10 or later with the GIL")
    return None


FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
"""python3.13t: the cp313t build (no stable ABI exists there)."""


reason = unsupported_interpreter()
if reason:
    raise SystemExit(reason)

from setuptools import Extension, setup  # noqa: E402 (after the check above)
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent.resolve()
STUB = ROOT / "stubs" / "zthread" / "_zthread.pyi"


TARGET = os.environ.get("ZTHREAD_ZIG_TARGET")
PLAT_NAME = os.environ.get("ZTHREAD_PLAT_NAME")


class ZigBuildExt(build_ext):
    def get_ext_filename(self, fullname: str) -> str:
        # The name every CPython from 3.10 imports: "_zthread.abi3.so" (POSIX) or "_zthread.pyd" (Windows), for
        # the target of a cross build or this machine. Not setuptools' choice, the building interpreter's first
        # abi3 suffix: on 3.15 that is ".abi3-x86_64-linux-gnu.so", which 3.10-3.14 do not import, so a
        # cp310-abi3 wheel built there would not work where its tag says it does. The cp313t build takes the
        # building interpreter's own suffix (".cpython-313t-x86_64-linux-gnu.so").
        if FREE_THREADED:
            return os.path.join(*fullname.split(".")) + sysconfig.get_config_var("EXT_SUFFIX")
        windows = "windows" in TARGET if TARGET else sys.platform == "win32"
        return os.path.join(*fullname.split(".")) + (".pyd" if windows else ".abi3.so")

    def build_extension(self, ext: Extension) -> None:
        dest = Path(self.get_ext_fullpath(ext.name))
        optimize = os.environ.get("ZTHREAD_ZIG_OPTIMIZE", "ReleaseSafe")
        with tempfile.TemporaryDirectory() as prefix:
            cmd = [
                sys.executable, "-m", "ziglang", "build",
                f"-Doptimize={optimize}", f"-Dext-name={dest.name}", "--prefix", prefix,
                f"-Dabi={'cp313t' if FREE_THREADED else 'abi3'}",
            ]
            if TARGET:
                cmd.append(f"-Dtarget={TARGET}")
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(prefix) / "lib" / dest.name, dest)


class BuildPyWithStub(build_py):
    def run(self) -> None:
        super().run()
        out = Path(self.build_lib) / "zthread"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(STUB, out / STUB.name)


# `pip install '.[test]'`. On a free-threaded 3.13 (no network but PyPI, no Rust toolchain) two tools have no
# wheel: mypy 2.4.1's ast-serialize, and hypothesis from 6.156 (a native part). There hypothesis stays at its last
# pure-Python release and mypy is left out (its tests skip; the same sources and stub are checked on every build
# with the GIL).
TEST_REQUIREMENTS = ["pytest>=8", "pytest-timeout>=2.3", "typing_extensions>=4.15", "ziglang==0.17.1",
                     "abi3audit>=0.0.20"]
if FREE_THREADED:
    TEST_REQUIREMENTS += ["hypothesis>=6.100,<6.156"]
else:
    TEST_REQUIREMENTS += ["hypothesis>=6.100", "mypy==2.4.1"]  # mypy pinned: stubtest's checks grow with releases

wheel_options: dict[str, str] = {} if FREE_THREADED else {"py_limited_api": "cp310"}
if PLAT_NAME:
    wheel_options["plat_name"] = PLAT_NAME
setup(
    ext_modules=[Extension("zthread._zthread", sources=[], py_limited_api=not FREE_THREADED)],
    cmdclass={"build_ext": ZigBuildExt, "build_py": BuildPyWithStub},
    options={"bdist_wheel": wheel_options},
    extras_require={"test": TEST_REQUIREMENTS},
)
