"""Build glue: setuptools asks, `zig build` (build.zig) builds.

The native module is built by `python -m ziglang build` (the pinned `ziglang` wheel, so no system
compiler is involved) and copied where setuptools expects it; the stub for it is copied from stubs/
next to it. Which ABI (zig build -Dabi) and wheel tag:
  - with the GIL: abi3, tagged cp310-abi3: one binary for CPython 3.10 and later;
  - on free-threaded CPython 3.13 or 3.14 (python3.13t, python3.14t): that interpreter's own ABI, cp313t or
    cp314t, tagged cp313-cp313t or cp314-cp314t;
  - on CPython 3.15 and later, with or without the GIL: abi3t (PEP 803), tagged cp315-abi3.abi3t: one binary
    for both builds of 3.15 and every later version (setuptools cannot tag it: BdistWheelTagged does).
The module's file name is one the target interpreter imports: `_zthread.abi3.so` / `_zthread.pyd` for abi3,
`_zthread.abi3t.so` / `_zthread.pyd` for abi3t, and the interpreter's own tagged name for the free-threaded ABIs
(`free_threaded_suffix`), so that a binary of one free-threaded version can never be imported by another.

Environment:
  ZTHREAD_ZIG_TARGET   a Zig target triple for cross builds (default: this machine, baseline CPU)
  ZTHREAD_ZIG_OPTIMIZE Zig optimize mode (default ReleaseSafe)
  ZTHREAD_PLAT_NAME    the wheel's platform tag for cross builds (e.g. manylinux_2_17_aarch64)
  ZTHREAD_ABI          the ABI for cross builds: abi3, cp313t, cp314t or abi3t (default: this interpreter's)
tools/wheels.py sets these for each wheel of the release.
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
    return None


FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
"""python3.13t and later: the building interpreter is free-threaded (for the test extra)."""
FREE_THREADED_ABIS = ("cp313t", "cp314t")
ABIS = ("abi3", *FREE_THREADED_ABIS, "abi3t")


def interpreter_abi() -> str:
    """The ABI this interpreter's build of zthread has: abi3t from 3.15, else its own if free-threaded, else abi3."""
    if sys.version_info >= (3, 15):
        return "abi3t"
    return f"cp{sys.version_info[0]}{sys.version_info[1]}t" if FREE_THREADED else "abi3"



reason = unsupported_interpreter()
if reason:
    raise SystemExit(reason)

from setuptools import Extension, setup  # noqa: E402 (after the check above)
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent.resolve()
STUB = ROOT / "stubs" / "zthread" / "_zthread.pyi"


TARGET = os.environ.get("ZTHREAD_ZIG_TARGET")
PLAT_NAME = os.environ.get("ZTHREAD_PLAT_NAME")
ABI = os.environ.get("ZTHREAD_ABI") or interpreter_abi()
if ABI not in ABIS:
    raise SystemExit(f"ZTHREAD_ABI={ABI}: zthread builds {', '.join(ABIS)}")


def free_threaded_suffix(abi: str, target: str | None) -> str:
    """The file-name suffix that free-threaded CPython `abi` ("cp313t") imports first on `target` (a Zig triple,
    None for this machine): its own EXT_SUFFIX. Linux: configure's SOABI with the platform triplet (the GNU or
    musl one); macOS: "darwin"; Windows: Python/dynload_win.c's ".cp313t-win_amd64.pyd". FreeBSD, whose
    SOABI could not be checked here, gets the untagged ".so" that every CPython on POSIX imports."""
    if target is None:
        if abi == interpreter_abi():
            return str(sysconfig.get_config_var("EXT_SUFFIX"))
        raise SystemExit(f"ZTHREAD_ABI={abi} on {sys.executable}: a cross build, which needs ZTHREAD_ZIG_TARGET")
    version = abi.removeprefix("cp")
    arch, system, *rest = target.split("-")
    system = system.split(".")[0]  # "macos.10.13", "freebsd.14.0": the OS without its version
    if system == "windows":
        return f".cp{version}-{dict(x86_64='win_amd64', aarch64='win_arm64')[arch]}.pyd"
    if system == "macos":
        return f".cpython-{version}-darwin.so"
    if system == "linux":
        return f".cpython-{version}-{arch}-linux-{rest[0].split('.')[0]}.so"
    return ".so"


class ZigBuildExt(build_ext):
    def get_ext_filename(self, fullname: str) -> str:
        # The name every CPython from 3.10 imports: "_zthread.abi3.so" (POSIX) or "_zthread.pyd" (Windows), for
        # the target of a cross build or this machine. Not setuptools' choice, the building interpreter's first
        # abi3 suffix: on 3.15 that is ".abi3-x86_64-linux-gnu.so", which 3.10-3.14 do not import, so a
        # cp310-abi3 wheel built there would not work where its tag says it does. A free-threaded build takes
        # its interpreter's own suffix (".cpython-313t-x86_64-linux-gnu.so").
        windows = "windows" in TARGET if TARGET else sys.platform == "win32"
        if ABI in FREE_THREADED_ABIS:
            return os.path.join(*fullname.split(".")) + free_threaded_suffix(ABI, TARGET)
        return os.path.join(*fullname.split(".")) + (".pyd" if windows else f".{ABI}.so")

    def build_extension(self, ext: Extension) -> None:
        dest = Path(self.get_ext_fullpath(ext.name))
        optimize = os.environ.get("ZTHREAD_ZIG_OPTIMIZE", "ReleaseSafe")
        with tempfile.TemporaryDirectory() as prefix:
            cmd = [
                sys.executable, "-m", "ziglang", "build",
                f"-Doptimize={optimize}", f"-Dext-name={dest.name}", "--prefix", prefix,
                f"-Dabi={ABI}",
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


class BdistWheelTagged(bdist_wheel):
    """A free-threaded ABI's wheel is tagged for it (cp314-cp314t), and the abi3t one cp315-abi3.abi3t (PEP 803: not
    cp310, which 3.13t and 3.14t would take and could not load), whichever interpreter builds it: setuptools would
    take the building interpreter's tag (tools/wheels.py cross-builds every wheel on one CPython), and knows no
    abi3t."""

    def get_tag(self) -> tuple[str, str, str]:
        impl, abi, plat = super().get_tag()
        if ABI == "abi3":
            return impl, abi, plat
        if ABI == "abi3t":
            return "cp315", "abi3.abi3t", plat
        return ABI.removesuffix("t"), ABI, plat


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

wheel_options: dict[str, str] = {"py_limited_api": "cp310"} if ABI == "abi3" else {}
if PLAT_NAME:
    wheel_options["plat_name"] = PLAT_NAME
setup(
    ext_modules=[Extension("zthread._zthread", sources=[], py_limited_api=ABI == "abi3")],
    cmdclass={"build_ext": ZigBuildExt, "build_py": BuildPyWithStub, "bdist_wheel": BdistWheelTagged},
    options={"bdist_wheel": wheel_options},
    extras_require={"test": TEST_REQUIREMENTS},
)
