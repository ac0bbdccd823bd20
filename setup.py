"""Build glue: setuptools asks, `zig build` (build.zig) builds.

The native module is built by `python -m ziglang build` (the pinned `ziglang` wheel, so no system
compiler is involved) and copied where setuptools expects it; the stub for it is copied from stubs/
next to it. The wheel is tagged cp310-abi3: one binary for CPython 3.10 and later.

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
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return (f"zthread does not support free-threaded CPython yet: {this} (free-threaded build); "
                "use a CPython 3.10 or later with the GIL (python3.13, not python3.13t)")
    return None


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
        # cp310-abi3 wheel built there would not work where its tag says it does.
        windows = "windows" in TARGET if TARGET else sys.platform == "win32"
        return os.path.join(*fullname.split(".")) + (".pyd" if windows else ".abi3.so")

    def build_extension(self, ext: Extension) -> None:
        dest = Path(self.get_ext_fullpath(ext.name))
        optimize = os.environ.get("ZTHREAD_ZIG_OPTIMIZE", "ReleaseSafe")
        with tempfile.TemporaryDirectory() as prefix:
            cmd = [
                sys.executable, "-m", "ziglang", "build",
                f"-Doptimize={optimize}", f"-Dext-name={dest.name}", "--prefix", prefix,
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


setup(
    ext_modules=[Extension("zthread._zthread", sources=[], py_limited_api=True)],
    cmdclass={"build_ext": ZigBuildExt, "build_py": BuildPyWithStub},
    options={"bdist_wheel": {"py_limited_api": "cp310", **({"plat_name": PLAT_NAME} if PLAT_NAME else {})}},
)
