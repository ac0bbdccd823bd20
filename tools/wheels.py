#!/usr/bin/env python3
"""zthread's wheels for every platform, cross-built on one Linux machine, and their checks.

    python3 tools/wheels.py build [--out dist] [--only NAME ...] [--abi ABI ...]   the sdist, then every wheel
    python3 tools/wheels.py verify [WHEEL_OR_SDIST ...]            inspect each (default: everything in dist/)
    python3 tools/wheels.py run-tests [--out dist]                 run what this machine can run (see below)
    python3 tools/wheels.py select [--out dist] PYTHON ...         which wheel pip takes on each interpreter

The wheels (README, "Wheels"): for every platform, one per ABI (ABIS):
  - cp310-abi3:   CPython 3.10 and later with the GIL, `_zthread.abi3.so` (`_zthread.pyd` on Windows, linking
                  python3.dll);
  - cp313-cp313t: free-threaded CPython 3.13, its own tagged file name (`_zthread.cpython-313t-x86_64-linux-gnu.so`,
                  `_zthread.cp313t-win_amd64.pyd` linking python313t.dll, ...);
  - cp314-cp314t: free-threaded CPython 3.14, the same way (python314t.dll);
  - cp315-abi3.abi3t: CPython 3.15 and later with and without the GIL (PEP 803), `_zthread.abi3t.so`
                  (`_zthread.pyd` linking python3t.dll), entry point `PyModExport__zthread`.

`build` makes the sdist first and builds every wheel from a fresh unpacking of it, so the sdist is proven
complete. Each wheel is `zig build -Dtarget=... -Dabi=...` for the platform's baseline CPU (build.zig decides
how; setup.py names and tags it).

`verify` checks, for every wheel: the file name's tags against the WHEEL file and against the binary (ELF, Mach-O
or PE machine; the OS through its C library or format; the minimum macOS version; glibc symbol versions <= 2.17),
the RECORD hashes, the files shipped, the binary's file name (one its interpreters import), the Python symbols it
uses (abi3: `abi3audit`, no symbol outside the 3.10 stable ABI; every ABI: only those its .def lists, which
tests/test_toolchain.py keeps equal to abi.zig's declarations), `auditwheel show` for manylinux, the musllinux
binary needing only musl's `libc.so`, the Windows `.pyd` importing Python only from its ABI's DLL, the macOS
binary leaving Python's symbols to dynamic lookup, and nothing exported but `PyInit__zthread`. For the sdist:
the files a build needs are in it. The layouts behind the binaries are compared with CPython's headers by
tools/layouts.py.

`select` answers "which wheel does pip install here?" for each given interpreter, from its own
`packaging.tags.sys_tags()`, and for the interpreters this machine cannot run (3.14t) from pip's own choice
(`pip download --python-version 3.14 --abi cp314t`) against the built wheels; each must be the intended one.

`run-tests` executes (needs `apt-get install qemu-user-static wine`):
  - `zig build test` (the core's tests) for x86_64-linux-musl natively, aarch64-linux-musl and aarch64-linux-gnu
    under qemu-aarch64-static, x86_64-windows-gnu under wine, and x86_64-linux-gnu under ThreadSanitizer (-Dtsan);
  - `zig build test-build` (compile and link only) for the targets nothing here can run: macOS, FreeBSD,
    Windows arm64;
  - the aarch64 manylinux wheel installed into Debian's arm64 CPython 3.11 under qemu
    (tools/fetch-arm64-python.sh), and the project's pytest suite run there;
  - the sdist installed with pip into a fresh venv (pip's isolated build: setuptools and ziglang from PyPI).

The first run creates .venv-release with the pinned tools of tools/release-requirements.txt and re-runs itself
in it. Nothing here needs a system compiler.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import csv
import hashlib
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS_VENV = ROOT / ".venv-release"
REQUIREMENTS = ROOT / "tools" / "release-requirements.txt"


@dataclass(frozen=True)
class Platform:
    name: str  # for --only
    zig_target: str
    tag: str  # the wheel's platform tag
    arch: str  # x86_64 or aarch64
    os: str  # linux-gnu, linux-musl, macos, windows, freebsd
    macos_min: tuple[int, int] | None = None


PLATFORMS = [
    Platform("manylinux-x86_64", "x86_64-linux-gnu.2.17", "manylinux_2_17_x86_64", "x86_64", "linux-gnu"),
    Platform("manylinux-aarch64", "aarch64-linux-gnu.2.17", "manylinux_2_17_aarch64", "aarch64", "linux-gnu"),
    Platform("musllinux-x86_64", "x86_64-linux-musl", "musllinux_1_2_x86_64", "x86_64", "linux-musl"),
    Platform("musllinux-aarch64", "aarch64-linux-musl", "musllinux_1_2_aarch64", "aarch64", "linux-musl"),
    Platform("macos-x86_64", "x86_64-macos.10.13", "macosx_10_13_x86_64", "x86_64", "macos", (10, 13)),
    Platform("macos-arm64", "aarch64-macos.11.0", "macosx_11_0_arm64", "aarch64", "macos", (11, 0)),
    Platform("windows-x86_64", "x86_64-windows-gnu", "win_amd64", "x86_64", "windows"),
    Platform("windows-arm64", "aarch64-windows-gnu", "win_arm64", "aarch64", "windows"),
    # Not for PyPI (it takes no BSD wheels): pip installs it on FreeBSD 14.0-RELEASE as is; on other releases,
    # build from the sdist (pip install zthread-*.tar.gz).
    Platform("freebsd-x86_64", "x86_64-freebsd.14.0", "freebsd_14_0_release_amd64", "x86_64", "freebsd"),
]
BY_TAG = {p.tag: p for p in PLATFORMS}


@dataclass(frozen=True)
class Abi:
    name: str  # build.zig's -Dabi, setup.py's ZTHREAD_ABI
    tag: str  # the wheel's python and ABI tags
    dll: str  # what the Windows binary links
    def_file: str  # zsrc/py/<def_file>.def: every Python symbol the binary may use
    export: str = "PyInit__zthread"  # the binary's one exported symbol: its entry point


ABIS = [
    Abi("abi3", "cp310-abi3", "python3.dll", "python3"),
    Abi("cp313t", "cp313-cp313t", "python313t.dll", "free_threaded"),
    Abi("cp314t", "cp314-cp314t", "python314t.dll", "free_threaded"),
    # Not cp310-abi3t: packaging lets 3.13t and 3.14t install a cpXY-abi3t up to their own version, and they
    # cannot load it. cp315 keeps them off (PEP 803).
    Abi("abi3t", "cp315-abi3.abi3t", "python3t.dll", "python3t", "PyModExport__zthread"),
]
BY_ABI_TAG = {a.tag: a for a in ABIS}


def binary_name(abi: Abi, plat: Platform) -> str:
    """The file name of the module in `abi`'s wheel for `plat`: one the interpreters it serves import. abi3: the
    untagged abi3 name of every CPython since 3.2 (Windows: `.pyd`). Free-threaded: that CPython's own
    EXT_SUFFIX: configure's SOABI `cpython-313t` with the platform triplet on Linux (`x86_64-linux-gnu`,
    `aarch64-linux-musl`), `darwin` on macOS, Windows' `cp313t-win_amd64` (Python/dynload_win.c's
    PYD_TAGGED_SUFFIX), so no other version imports it; FreeBSD, whose SOABI is not checked here, gets the
    untagged `.so` every POSIX CPython imports."""
    if abi.name in ("abi3", "abi3t"):
        return "_zthread.pyd" if plat.os == "windows" else f"_zthread.{abi.name}.so"
    version = abi.name.removeprefix("cp")
    if plat.os == "windows":
        return f"_zthread.cp{version}-{plat.tag}.pyd"
    if plat.os == "macos":
        return f"_zthread.cpython-{version}-darwin.so"
    if plat.os.startswith("linux"):
        return f"_zthread.cpython-{version}-{plat.arch}-{plat.os}.so"
    return "_zthread.so"


def def_symbols(abi: Abi) -> set[str]:
    lines = (ROOT / "zsrc" / "py" / f"{abi.def_file}.def").read_text().splitlines()
    return {line.strip().removesuffix(" DATA") for line in lines[lines.index("EXPORTS") + 1:] if line.strip()}

# What a wheel must hold besides the binary and its .dist-info.
PACKAGE_FILES = {"__init__.py", "__main__.py", "_apps.py", "_bench.py", "_run.py", "py.typed", "_zthread.pyi", "include/zthread.h"}
# What the sdist must hold for `pip install zthread-*.tar.gz` to build.
SDIST_FILES = {"PKG-INFO", "pyproject.toml", "setup.py", "build.zig", "README.md", "LICENSE",
               "zsrc/py/python3.def", "zsrc/py/free_threaded.def", "zsrc/py/python3t.def", "zsrc/py/module.zig", "zsrc/core/root.zig", "stubs/zthread/_zthread.pyi",
               "zthread/__init__.py", "zthread/py.typed", "zthread/include/zthread.h"}
# The shared libraries a manylinux_2_17 extension may need (PEP 599's list, those a C library provides).
MANYLINUX_LIBS = {"libc.so.6", "libpthread.so.0", "libm.so.6", "libdl.so.2", "librt.so.1",
                  "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}
WINDOWS_SYSTEM_DLLS = re.compile(r"(kernel32|ntdll|advapi32|ucrtbase|api-ms-win-crt-[a-z0-9-]+)\.dll", re.I)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the sdist and every platform's wheel")
    b.add_argument("--out", type=Path, default=ROOT / "dist")
    b.add_argument("--only", nargs="+", choices=[p.name for p in PLATFORMS], help="just these platforms")
    b.add_argument("--abi", nargs="+", choices=[a.name for a in ABIS], help="just these ABIs")
    v = sub.add_parser("verify", help="inspect wheels and the sdist")
    v.add_argument("files", nargs="*", type=Path)
    r = sub.add_parser("run-tests", help="run the cross-built code under qemu and wine")
    r.add_argument("--out", type=Path, default=ROOT / "dist", help="where the built wheels are")
    r.add_argument("--sdist-python", type=Path, action="append", default=[],
                   help="an interpreter to install the sdist on (repeatable; default: the one running this)")
    s = sub.add_parser("select", help="check which wheel pip takes on each interpreter")
    s.add_argument("--out", type=Path, default=ROOT / "dist", help="where the built wheels are")
    s.add_argument("pythons", nargs="*", type=Path, help="interpreters to ask (their packaging.tags)")
    args = parser.parse_args()
    ensure_tools()
    if args.command == "build":
        return build(args.out.resolve(), [p for p in PLATFORMS if not args.only or p.name in args.only],
                     [a for a in ABIS if not args.abi or a.name in args.abi])
    if args.command == "select":
        return select(args.out.resolve(), args.pythons)
    if args.command == "verify":
        files = args.files or sorted((ROOT / "dist").glob("zthread-*"))
        if not files:
            print("verify: nothing to verify (run `build` first)", file=sys.stderr)
            return 1
        return verify(files)
    return run_tests(args.out.resolve(), args.sdist_python)


# ---- the pinned tools ----


def ensure_tools() -> None:
    """Re-run in .venv-release, made on first use, unless already inside it."""
    if Path(sys.prefix).resolve() == TOOLS_VENV.resolve():
        return
    python = TOOLS_VENV / "bin" / "python"
    stamp = TOOLS_VENV / "requirements.txt"
    if not python.exists() or not stamp.exists() or stamp.read_text() != REQUIREMENTS.read_text():
        print(f"wheels: installing the pinned tools into {TOOLS_VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", TOOLS_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "-r", REQUIREMENTS], check=True)
        shutil.copyfile(REQUIREMENTS, stamp)
    os.execv(python, [str(python), __file__, *sys.argv[1:]])


def run(cmd: list[str | Path], **kw: object) -> subprocess.CompletedProcess[str]:
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], text=True, **kw)  # type: ignore[call-overload, no-any-return]


def tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


# ---- build ----


def build(out: Path, platforms: list[Platform], abis: list[Abi]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("zthread-*"):
        old.unlink()
    run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", out], cwd=ROOT, check=True)
    (sdist,) = out.glob("zthread-*.tar.gz")

    # One unpacking per ABI, its Zig cache shared by that ABI's platforms; the ABIs build side by side, one per
    # CPU (a Zig build of one target keeps about one CPU busy), each starting at another platform: the first
    # build for a target also builds its C runtime into Zig's global cache, and a second build for the same
    # target would wait for it.
    def build_abi(i: int, abi: Abi) -> None:
        start = i * len(platforms) // len(abis)
        with tempfile.TemporaryDirectory() as tmp:
            with tarfile.open(sdist) as tar:
                tar.extractall(tmp, filter="data")
            (src,) = Path(tmp).iterdir()
            for p in platforms[start:] + platforms[:start]:
                env = dict(os.environ, ZTHREAD_ZIG_TARGET=p.zig_target, ZTHREAD_PLAT_NAME=p.tag, ZTHREAD_ABI=abi.name)
                run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out], cwd=src,
                    env=env, check=True, stdout=subprocess.DEVNULL)
                shutil.rmtree(src / "build", ignore_errors=True)  # setuptools' staging, not to leak into the next

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for done in [pool.submit(build_abi, i, abi) for i, abi in enumerate(abis)]:
            done.result()  # a failed build raises here
    built = sorted(f.name for f in out.glob("zthread-*"))
    print("\n".join(["built:", *built]))
    return 0 if len(built) == len(platforms) * len(abis) + 1 else 1


# ---- verify ----


class Failed(Exception):
    pass


def check(ok: bool, what: str) -> None:
    if not ok:
        raise Failed(what)


def verify(files: list[Path]) -> int:
    failures = 0
    for f in files:
        checks = verify_sdist(f) if f.name.endswith(".tar.gz") else verify_wheel(f)
        try:
            for line in checks:
                print(f"  ok  {line}")
            print(f"PASS {f.name}")
        except Failed as e:
            print(f"FAIL {f.name}: {e}")
            failures += 1
    print(f"verify: {len(files) - failures} of {len(files)} passed")
    return 1 if failures else 0


def verify_sdist(path: Path) -> Iterator[str]:
    with tarfile.open(path) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing = SDIST_FILES - names
    check(not missing, f"sdist lacks {sorted(missing)}")
    yield f"sdist holds what a build needs ({len(names)} files)"


def verify_wheel(path: Path) -> Iterator[str]:
    m = re.fullmatch(r"zthread-([^-]+)-([a-z0-9]+-[a-z0-9.]+)-([a-z0-9_]+)\.whl", path.name)
    check(m is not None, "file name is not zthread-VERSION-PYTHON-ABI-PLATFORM.whl")
    assert m is not None
    version, abi_tag, tag = m.groups()
    check(abi_tag in BY_ABI_TAG, f"unknown python and ABI tags {abi_tag}: expected one of {sorted(BY_ABI_TAG)}")
    check(tag in BY_TAG, f"unknown platform tag {tag}")
    plat, abi = BY_TAG[tag], BY_ABI_TAG[abi_tag]
    yield f"file name: {abi_tag}-{tag} ({abi.name}, {plat.name})"

    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    dist_info = f"zthread-{version}.dist-info"
    wheel_meta = files[f"{dist_info}/WHEEL"].decode()
    tags = [line.removeprefix("Tag: ") for line in wheel_meta.splitlines() if line.startswith("Tag: ")]
    from packaging.tags import parse_tag

    # A compressed tag set (cp315-abi3.abi3t-...) is one Tag line per tag it expands to.
    expanded = {str(t) for t in parse_tag(f"{abi_tag}-{tag}")}
    check(sorted(tags) == sorted(expanded), f"WHEEL's Tag {tags} does not match the file name ({sorted(expanded)})")
    check("Root-Is-Purelib: false" in wheel_meta, "WHEEL says the wheel is pure")
    yield "WHEEL: Tag and Root-Is-Purelib match"
    check_record(files, f"{dist_info}/RECORD")
    yield "RECORD: every file's hash and size"

    ext = binary_name(abi, plat)
    pkg = {n.split("/", 1)[1] for n in files if n.startswith("zthread/")}
    check(pkg == PACKAGE_FILES | {ext}, f"zthread/ holds {sorted(pkg)}, expected {sorted(PACKAGE_FILES | {ext})}")
    yield f"files: the package, its stub and zthread/{ext} (a name {abi.name} interpreters import)"

    binary = files[f"zthread/{ext}"]
    inspect: dict[str, Callable[[bytes, Platform, Abi], Iterator[str]]] = {
        "linux-gnu": inspect_elf, "linux-musl": inspect_elf, "freebsd": inspect_elf,
        "macos": inspect_macho, "windows": inspect_pe,
    }
    yield from inspect[plat.os](binary, plat, abi)

    if abi.name == "abi3":
        proc = run([tool("abi3audit"), "--strict", "--summary", "--assume-minimum-abi3", "3.10", path],
                   capture_output=True)
        summary = " ".join((proc.stdout + proc.stderr).split())
        check(proc.returncode == 0 and "1 extensions scanned; 0 ABI version mismatches and 0 ABI violations" in summary,
              f"abi3audit: {summary}")
        yield "abi3audit: every Python symbol is in the 3.10 stable ABI"

    if plat.os == "linux-gnu":
        proc = run([tool("auditwheel"), "show", path], capture_output=True)
        text = " ".join(proc.stdout.split())
        check(proc.returncode == 0 and f'consistent with the following platform tag: "{tag}"' in text,
              f"auditwheel show: {proc.stdout}{proc.stderr}")
        yield f"auditwheel show: consistent with {tag}"


def check_record(files: dict[str, bytes], record_name: str) -> None:
    rows = list(csv.reader(io.StringIO(files[record_name].decode())))
    listed = {r[0] for r in rows}
    check(listed == set(files), f"RECORD lists {sorted(listed ^ set(files))} wrongly")
    for name, digest, size in rows:
        if name == record_name:
            continue
        algo, _, want = digest.partition("=")
        got = base64.urlsafe_b64encode(hashlib.new(algo, files[name]).digest()).rstrip(b"=").decode()
        check(got == want and int(size) == len(files[name]), f"RECORD: {name} does not match")


# -- ELF (Linux glibc and musl, FreeBSD) --


def python_symbols_listed(used: set[str], abi: Abi) -> str:
    """Every Python symbol the binary uses is one its ABI's .def lists (abi.zig's declarations for it)."""
    unlisted = sorted(used - def_symbols(abi))
    check(bool(used) and not unlisted, f"Python symbols not in zsrc/py/{abi.def_file}.def: {unlisted}")
    return f"its {len(used)} Python symbols are all in zsrc/py/{abi.def_file}.def ({abi.name})"


def inspect_elf(data: bytes, plat: Platform, abi: Abi) -> Iterator[str]:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.gnuversions import GNUVerNeedSection

    elf = ELFFile(io.BytesIO(data))
    machine = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}[plat.arch]
    check(elf.elfclass == 64 and elf.header.e_machine == machine and elf.header.e_type == "ET_DYN",
          f"ELF is {elf.elfclass}-bit {elf.header.e_machine} {elf.header.e_type}")
    yield f"ELF: 64-bit shared object for {machine}"

    dynamic = elf.get_section_by_name(".dynamic")
    tags = list(dynamic.iter_tags())
    needed = [t.needed for t in tags if t.entry.d_tag == "DT_NEEDED"]
    textrel = any(t.entry.d_tag == "DT_TEXTREL" or (t.entry.d_tag == "DT_FLAGS" and t.entry.d_val & 0x4)
                  for t in tags)
    check(not textrel, "text relocations (not position-independent)")
    check(not any("python" in n for n in needed), f"links a libpython: {needed}")
    versions: dict[str, set[str]] = {}
    for section in elf.iter_sections():
        if isinstance(section, GNUVerNeedSection):
            for verneed, auxes in section.iter_versions():
                versions.setdefault(verneed.name, set()).update(a.name for a in auxes)
    if plat.os == "linux-gnu":
        check(set(needed) <= MANYLINUX_LIBS, f"needs {needed}, beyond glibc's")
        check("libc.so.6" in needed, f"needs {needed}: not glibc's libc.so.6")
        glibc = {v for vs in versions.values() for v in vs if v.startswith("GLIBC_")}
        newest = max((tuple(int(x) for x in v[6:].split(".")) for v in glibc), default=(0,))
        check(newest <= (2, 17), f"needs glibc {'.'.join(map(str, newest))} > 2.17")
        yield f"glibc: needs {sorted(needed)}, symbol versions <= 2.17 (newest {'.'.join(map(str, newest))})"
    elif plat.os == "linux-musl":
        check(needed == ["libc.so"], f"needs {needed}, not musl's libc.so alone")
        check(not versions, f"versioned symbols {versions} (glibc's, not musl's)")
        yield "musl: needs libc.so only"
    else:
        check(set(needed) <= {"libc.so.7", "libthr.so.3"} and "libc.so.7" in needed,
              f"needs {needed}: not FreeBSD's libc.so.7")
        check(all(v.startswith("FBSD_") for vs in versions.values() for v in vs), f"symbol versions {versions}")
        yield f"FreeBSD: needs {sorted(needed)} (FBSD_* symbol versions)"

    dynsym = elf.get_section_by_name(".dynsym")
    exported = {s.name for s in dynsym.iter_symbols()
                if s.name and s["st_shndx"] != "SHN_UNDEF" and s["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK")
                and s["st_other"]["visibility"] in ("STV_DEFAULT", "STV_PROTECTED")}
    check(exported == {abi.export}, f"exports {sorted(exported)}")
    undefined_py = [s.name for s in dynsym.iter_symbols() if s.name.startswith(("Py", "_Py")) and
                    s["st_shndx"] == "SHN_UNDEF"]
    check(bool(undefined_py), "no Python symbol left for the interpreter to resolve")
    yield f"exports only {abi.export}; {len(undefined_py)} Python symbols resolved by the interpreter at load"
    yield python_symbols_listed(set(undefined_py), abi)


# -- Mach-O (macOS) --


MH_MAGIC_64 = 0xFEEDFACF
CPU = {"x86_64": 0x01000007, "aarch64": 0x0100000C}
LC_SYMTAB, LC_LOAD_DYLIB, LC_VERSION_MIN_MACOSX, LC_BUILD_VERSION = 0x2, 0xC, 0x24, 0x32
LC_LOAD_WEAK_DYLIB, LC_REEXPORT_DYLIB = 0x80000018, 0x8000001F
LC_DYLD_INFO, LC_DYLD_INFO_ONLY, LC_DYLD_EXPORTS_TRIE = 0x22, 0x80000022, 0x80000033
# Zig 0.17's Mach-O linker makes these two header markers global (ld64 and lld keep them private), so every
# dylib it links exports them; they name the Mach-O header, not code, and cannot collide with anything in a
# two-level namespace (Python also loads extensions RTLD_LOCAL). docs/DESIGN.md has the details.
MACHO_LINKER_SYMBOLS = {"__mh_dylib_header", "___dso_handle"}
MH_BUNDLE, MH_DYLIB = 8, 6
BIND_FLAT_LOOKUP = -2
PLATFORM_MACOS = 1


def inspect_macho(data: bytes, plat: Platform, abi: Abi) -> Iterator[str]:
    magic, cputype, _, filetype, ncmds = struct.unpack_from("<IiiII", data, 0)
    check(magic == MH_MAGIC_64, f"not a 64-bit Mach-O (magic {magic:#x})")
    check(cputype == CPU[plat.arch], f"Mach-O CPU type {cputype:#x}, not {plat.arch}")
    check(filetype in (MH_BUNDLE, MH_DYLIB), f"Mach-O file type {filetype}")
    yield f"Mach-O: 64-bit {plat.arch} {'bundle' if filetype == MH_BUNDLE else 'dylib'}"

    minos: tuple[int, int] | None = None
    dylibs: list[str] = []
    symtab: tuple[int, int, int, int] | None = None
    trie: tuple[int, ...] = (0, 0)
    dyld_info: tuple[int, ...] | None = None
    offset = 32
    for _ in range(ncmds):
        cmd, size = struct.unpack_from("<II", data, offset)
        if cmd == LC_BUILD_VERSION:
            platform, version = struct.unpack_from("<II", data, offset + 8)
            check(platform == PLATFORM_MACOS, f"built for Apple platform {platform}, not macOS")
            minos = (version >> 16, (version >> 8) & 0xFF)
        elif cmd == LC_VERSION_MIN_MACOSX:
            (version,) = struct.unpack_from("<I", data, offset + 8)
            minos = (version >> 16, (version >> 8) & 0xFF)
        elif cmd in (LC_LOAD_DYLIB, LC_LOAD_WEAK_DYLIB, LC_REEXPORT_DYLIB):
            (name_at,) = struct.unpack_from("<I", data, offset + 8)
            dylibs.append(data[offset + name_at: offset + size].split(b"\0")[0].decode())
        elif cmd == LC_SYMTAB:
            symtab = struct.unpack_from("<IIII", data, offset + 8)
        elif cmd in (LC_DYLD_INFO, LC_DYLD_INFO_ONLY):
            dyld_info = struct.unpack_from("<10I", data, offset + 8)
            trie = dyld_info[8:10]
        elif cmd == LC_DYLD_EXPORTS_TRIE:
            trie = struct.unpack_from("<II", data, offset + 8)
        offset += size
    check(minos == plat.macos_min, f"minimum macOS {minos}, the tag says {plat.macos_min}")
    yield f"minimum macOS {minos[0]}.{minos[1]} (LC_BUILD_VERSION / LC_VERSION_MIN_MACOSX) matches the tag"
    check(not any("ython" in d for d in dylibs), f"links {dylibs}")
    check(all(d.startswith("/usr/lib/") for d in dylibs), f"links {dylibs} outside /usr/lib")
    yield f"links only {dylibs}"

    check(symtab is not None, "no symbol table")
    assert symtab is not None
    symoff, nsyms, stroff, _ = symtab
    # What dyld can find is the export trie's content (the symbol table's N_EXT entries are only a hint).
    exported = export_trie(data[trie[0]: trie[0] + trie[1]])
    check(exported - MACHO_LINKER_SYMBOLS == {"_" + abi.export}, f"exports {sorted(exported)}")
    yield f"exports only _{abi.export} (and Zig's header markers {sorted(exported & MACHO_LINKER_SYMBOLS)})"
    undefined = set()
    for i in range(nsyms):
        strx, ntype, _, _, _ = struct.unpack_from("<IBBHQ", data, symoff + 16 * i)
        if ntype & 0xEF == 0x01:  # undefined, external, not a debugging entry
            undefined.add(data[stroff + strx:].split(b"\0", 1)[0].decode())
    python = {n for n in undefined if n.startswith(("_Py", "__Py"))}
    # How dyld binds them: the bind and lazy-bind opcodes of LC_DYLD_INFO name a library ordinal per symbol;
    # BIND_SPECIAL_DYLIB_FLAT_LOOKUP (-2) means "whatever image defines it", i.e. the interpreter.
    check(dyld_info is not None, "no LC_DYLD_INFO (chained fixups are not inspected here)")
    assert dyld_info is not None
    ordinals: dict[str, set[int]] = {}
    for start, size in ((dyld_info[2], dyld_info[3]), (dyld_info[4], dyld_info[5]), (dyld_info[6], dyld_info[7])):
        for name, ordinal in bind_opcodes(data[start: start + size]):
            ordinals.setdefault(name, set()).add(ordinal)
    bound = sorted(n for n in python if ordinals.get(n, set()) - {BIND_FLAT_LOOKUP})
    unbound = sorted(python - set(ordinals))
    check(bool(python) and not bound and not unbound, f"Python symbols bound to a library: {bound}; never bound: {unbound}")
    yield f"{len(python)} Python symbols bound by flat lookup (the interpreter's), none to a library"
    yield python_symbols_listed({n.removeprefix("_") for n in python}, abi)


def bind_opcodes(ops: bytes) -> Iterator[tuple[str, int]]:
    """(symbol, library ordinal) for every bind that dyld's bind opcodes perform."""
    at, ordinal, symbol = 0, 0, ""

    def uleb() -> int:
        nonlocal at
        value = shift = 0
        while True:
            byte = ops[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    while at < len(ops):
        op, imm = ops[at] & 0xF0, ops[at] & 0x0F
        at += 1
        if op == 0x10:  # SET_DYLIB_ORDINAL_IMM
            ordinal = imm
        elif op == 0x20:  # SET_DYLIB_ORDINAL_ULEB
            ordinal = uleb()
        elif op == 0x30:  # SET_DYLIB_SPECIAL_IMM: 0, -1, -2, -3 (sign-extended 4 bits)
            ordinal = imm - 16 if imm else 0
        elif op == 0x40:  # SET_SYMBOL_TRAILING_FLAGS_IMM
            end = ops.index(b"\0", at)
            symbol, at = ops[at:end].decode(), end + 1
        elif op in (0x60, 0x80):  # SET_ADDEND_SLEB, ADD_ADDR_ULEB
            uleb()
        elif op == 0x70:  # SET_SEGMENT_AND_OFFSET_ULEB
            uleb()
        elif op in (0x90, 0xB0):  # DO_BIND, DO_BIND_ADD_ADDR_IMM_SCALED
            yield symbol, ordinal
        elif op == 0xA0:  # DO_BIND_ADD_ADDR_ULEB
            uleb()
            yield symbol, ordinal
        elif op == 0xC0:  # DO_BIND_ULEB_TIMES_SKIPPING_ULEB
            uleb()
            uleb()
            yield symbol, ordinal
        elif op not in (0x00, 0x50):  # DONE (separates lazy binds), SET_TYPE_IMM
            raise Failed(f"bind opcode {op:#x} not understood")


def export_trie(trie: bytes) -> set[str]:
    """The names in a Mach-O export trie (dyld's format: terminal info, then edges to children)."""

    def uleb(at: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = trie[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, at

    names: set[str] = set()
    stack = [(0, "")] if trie else []
    while stack:
        node, prefix = stack.pop()
        terminal, at = uleb(node)
        if terminal:
            names.add(prefix)
        at += terminal
        children = trie[at]
        at += 1
        for _ in range(children):
            end = trie.index(b"\0", at)
            edge = trie[at:end].decode()
            child, at = uleb(end + 1)
            stack.append((child, prefix + edge))
    return names


# -- PE (Windows) --


def inspect_pe(data: bytes, plat: Platform, abi: Abi) -> Iterator[str]:
    import pefile

    pe = pefile.PE(data=data)
    machine = {"x86_64": 0x8664, "aarch64": 0xAA64}[plat.arch]
    check(pe.FILE_HEADER.Machine == machine and pe.is_dll(), f"PE machine {pe.FILE_HEADER.Machine:#x}, dll {pe.is_dll()}")
    yield f"PE: DLL for machine {machine:#x}"
    imports = {e.dll.decode(): [i.name.decode() for i in e.imports if i.name]
               for e in getattr(pe, "DIRECTORY_ENTRY_IMPORT", [])}
    dll = abi.dll
    others = [d for d in imports if d.lower() != dll and not WINDOWS_SYSTEM_DLLS.fullmatch(d)]
    check(dll in {d.lower() for d in imports}, f"does not import {dll}: {sorted(imports)}")
    check(not others, f"imports {others}")
    py_elsewhere = [f"{d}!{n}" for d, ns in imports.items() if d.lower() != dll for n in ns
                    if n.startswith(("Py", "_Py"))]
    check(not py_elsewhere, f"Python symbols from elsewhere: {py_elsewhere}")
    yield f"imports Python from {dll} only; other DLLs: {sorted(d for d in imports if d.lower() != dll)}"
    yield python_symbols_listed({n for d, ns in imports.items() if d.lower() == dll for n in ns}, abi)
    export_dir = getattr(pe, "DIRECTORY_ENTRY_EXPORT", None)
    exported = {s.name.decode() for s in export_dir.symbols if s.name} if export_dir else set()
    check(exported == {abi.export}, f"exports {sorted(exported)}")
    yield f"exports only {abi.export}"


# ---- run-tests ----


def zig(*args: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "ziglang", *args], cwd=ROOT, **kw)


def run_tests(out: Path, sdist_pythons: list[Path]) -> int:
    for needed in ("qemu-aarch64-static", "wine"):
        if not shutil.which(needed):
            print(f"run-tests: {needed} not found: apt-get install qemu-user-static wine", file=sys.stderr)
            return 1
    arm64 = ROOT / ".pythons" / "arm64"
    run(["bash", ROOT / "tools" / "fetch-arm64-python.sh", arm64], check=True)
    sysroot = arm64 / "root"
    results: list[tuple[str, bool]] = []

    def core_tests(target: str, *runner: str | Path, options: tuple[str, ...] = ()) -> None:
        args = [*options, *(f"-Dtest-runner={r}" for r in runner)]
        with tempfile.TemporaryDirectory() as wineprefix:
            env = dict(os.environ, WINEPREFIX=wineprefix, WINEDEBUG="-all")
            proc = zig("build", "test", f"-Dtarget={target}", *args, env=env, capture_output=True)
        text = proc.stdout + proc.stderr
        print(text[-3000:])
        # The test binary says how many tests ran ("All 25 tests passed." or "23 passed; 2 skipped; 0 failed.");
        # require a count, so that a runner that ran nothing fails.
        m = re.search(r"All (\d+) tests passed|(\d+) passed; (\d+) skipped; 0 failed", text)
        ok = proc.returncode == 0 and m is not None
        counts = "" if m is None else f": {m[1] or m[2]} passed" + (f", {m[3]} skipped" if m[3] else "")
        results.append((f"zig build test {' '.join(options)}".rstrip() + f", {target} via {runner[0]}{counts}", ok))

    def zig_tests() -> None:
        # `env` runs the native binary standalone, so that it prints its own count as the emulated ones do.
        core_tests("x86_64-linux-musl", "env")
        # ThreadSanitizer: a report makes the test binary exit 66, so the step fails.
        core_tests("x86_64-linux-gnu", "env", options=("-Dtsan",))
        core_tests("aarch64-linux-musl", "qemu-aarch64-static")
        core_tests("aarch64-linux-gnu.2.17", "qemu-aarch64-static", "-L", sysroot)
        core_tests("x86_64-windows-gnu", "wine")
        for target in ("aarch64-windows-gnu", "x86_64-macos.10.13", "aarch64-macos.11.0", "x86_64-freebsd.14.0"):
            with tempfile.TemporaryDirectory() as prefix:
                proc = zig("build", "test-build", f"-Dtarget={target}", "--prefix", prefix)
            results.append((f"zig build test-build (compile and link), {target}", proc.returncode == 0))

    # The Zig tests (compiles that keep about one CPU busy) run beside the arm64 pytest under qemu: about 4.5
    # minutes rather than 7.5. Both check behaviour, not time; the pytest's timeouts are wide.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        zig_done = pool.submit(zig_tests)
        arm64_ok = arm64_pytest(out, sysroot) == 0
        zig_done.result()
    results.append(("pytest on arm64 CPython 3.11 under qemu, manylinux aarch64 wheel", arm64_ok))
    # The interpreter this tool was started with, not the tools' venv: nothing preinstalled.
    for python in sdist_pythons or [Path(sys.base_prefix) / "bin" / "python3"]:
        results.append((f"sdist: `pip install zthread-*.tar.gz` in a fresh venv of {python} builds a working module",
                        sdist_install(out, python) == 0))
    print("\nrun-tests:")
    for what, ok in results:
        print(f"  {'PASS' if ok else 'FAIL'}  {what}")
    return 0 if all(ok for _, ok in results) else 1


SMOKE = """
import zthread, sys
assert "threading" not in sys.modules
import sysconfig  # imports threading on 3.13+
assert not (sysconfig.get_config_var("Py_GIL_DISABLED") and sys._is_gil_enabled()), "zthread turned the GIL on"
lock = zthread.allocate_lock()
done = zthread.allocate_lock()
done.acquire()
zthread.start_new_thread(done.release, ())
assert done.acquire(timeout=10) and lock.acquire(False) and not lock.acquire(timeout=0.01)
print("zthread from the sdist works:", zthread._zthread.__file__)
"""


def sdist_install(out: Path, python: Path) -> int:
    """The sdist on a machine with only Python: pip's isolated build fetches setuptools and ziglang itself, and
    builds the variant `python` needs (abi3, or a free-threaded interpreter's own)."""
    sdists = list(out.glob("zthread-*.tar.gz"))
    if len(sdists) != 1:
        print(f"run-tests: no sdist in {out}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        run([python, "-m", "venv", venv], check=True)
        proc = run([venv / "bin" / "pip", "install", "--quiet", sdists[0]])
        if proc.returncode != 0:
            return proc.returncode
        return run([venv / "bin" / "python", "-I", "-c", SMOKE], cwd=tmp).returncode


def arm64_pytest(out: Path, sysroot: Path) -> int:
    wheels = list(out.glob("zthread-*-cp310-abi3-manylinux_2_17_aarch64.whl"))
    if len(wheels) != 1:
        print(f"run-tests: no aarch64 manylinux wheel in {out} (run `build` first)", file=sys.stderr)
        return 1
    site = sysroot / "usr" / "lib" / "python3" / "dist-packages"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    # The host's pip fills the arm64 interpreter's site-packages: the wheel plus the pure test requirements.
    run([sys.executable, "-m", "pip", "install", "--quiet", "--target", site, "--platform", "manylinux_2_17_aarch64",
         "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--only-binary=:all:",
         wheels[0], "pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100"], check=True)
    # test_toolchain.py checks the source tree (zig build test, mypy, stubtest, abi3audit) and test_bench.py the
    # bench's pure-Python harness in child interpreters (30 of the run's 170 s under qemu): the same on every
    # platform and run natively by CI; everything else runs here. Timeouts are wider: qemu is ~10x slower.
    # -P keeps the source folder (which has no binary) off sys.path.
    proc = run([sysroot / "usr" / "bin" / "python3", "-P", "-m", "pytest", "-o", "timeout=900",
                "--ignore=tests/test_toolchain.py", "--ignore=tests/test_bench.py", "-q"], cwd=ROOT)
    return proc.returncode


# ---- select ----

# Run by each interpreter, with nothing on its path but a copy of the pinned `packaging`: the wheel among
# argv[1:] that ranks first in the interpreter's own tags (what pip installs), and what the interpreter is.
CHOOSE = """
import importlib.machinery, json, sys, sysconfig
from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename
rank = {str(t): i for i, t in enumerate(sys_tags())}
fits = sorted((min(rank[str(t)] for t in parse_wheel_filename(n)[3] if str(t) in rank), n)
              for n in sys.argv[1:] if any(str(t) in rank for t in parse_wheel_filename(n)[3]))
print(json.dumps({"version": list(sys.version_info[:2]), "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
                  "wheel": fits[0][1] if fits else None, "suffixes": importlib.machinery.EXTENSION_SUFFIXES}))
"""
# What pip is asked for the interpreters this machine cannot run: (python version, ABI tag, intended ABI).
ELSEWHERE = [("3.14", "cp314t", "cp314t"), ("3.13", "cp313t", "cp313t"), ("3.15", "cp315t", "abi3t"),
             ("3.16", "cp316t", "abi3t"), ("3.15", "cp315", "abi3t"), ("3.16", "cp316", "abi3t"),
             ("3.14", "cp314", "abi3"), ("3.10", "cp310", "abi3")]


def intended(version: tuple[int, int], free_threaded: bool) -> str:
    """The ABI whose wheel an interpreter should get."""
    if version >= (3, 15):
        return "abi3t"
    return f"cp{version[0]}{version[1]}t" if free_threaded else "abi3"


def abi_of(wheel: str | None) -> str | None:
    m = re.fullmatch(r"zthread-[^-]+-([a-z0-9]+-[a-z0-9.]+)-[a-z0-9_]+\.whl", wheel or "")
    abi = BY_ABI_TAG.get(m[1]) if m else None
    return abi.name if abi else None


def select(out: Path, pythons: list[Path]) -> int:
    import json

    import packaging

    wheels = sorted(f.name for f in out.glob("zthread-*.whl"))
    if not wheels:
        print(f"select: no wheels in {out} (run `build` first)", file=sys.stderr)
        return 1
    failures = 0

    def report(what: str, chosen: str | None, want: str) -> None:
        nonlocal failures
        ok = abi_of(chosen) == want and chosen is not None and chosen.endswith("-manylinux_2_17_x86_64.whl")
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {chosen} (intended: the {want} wheel)")

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(Path(packaging.__file__).parent, Path(tmp) / "packaging")
        for python in pythons:
            proc = subprocess.run([python, "-I", "-c", f"import sys; sys.path.insert(0, {tmp!r}); {CHOOSE}", *wheels],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"FAIL {python}: {proc.stderr.strip()}")
                failures += 1
                continue
            info = json.loads(proc.stdout)
            major, minor = info["version"]
            free_threaded = bool(info["free_threaded"])
            name = f"{major}.{minor}{'t' if free_threaded else ''}"
            report(f"CPython {name} ({python}), by its packaging.tags", info["wheel"],
                   intended((major, minor), free_threaded))
            # ... and the binary in that wheel has a name the interpreter imports (its EXTENSION_SUFFIXES).
            if info["wheel"]:
                with zipfile.ZipFile(out / info["wheel"]) as z:
                    (binary,) = [n for n in z.namelist() if n.startswith("zthread/_zthread.") and not n.endswith(".pyi")]
                suffix = next((x for x in info["suffixes"] if binary.endswith("_zthread" + x)), None)
                failures += suffix is None
                print(f"{'ok  ' if suffix else 'FAIL'} CPython {name} imports {binary} (suffix {suffix!r} of "
                      f"{info['suffixes']})")
        # pip itself, told which interpreter to pick for (the one it runs on does not matter).
        for version, abi_tag, want in ELSEWHERE:
            dest = Path(tmp) / f"pip-{abi_tag}"
            proc = run([sys.executable, "-m", "pip", "download", "--quiet", "--no-index", "--find-links", out,
                        "--only-binary", ":all:", "--python-version", version, "--implementation", "cp",
                        "--abi", abi_tag, "--platform", "manylinux_2_17_x86_64", "--dest", dest, "zthread"],
                       capture_output=True)
            got = sorted(p.name for p in dest.glob("*.whl")) if proc.returncode == 0 else []
            report(f"pip download --python-version {version} --abi {abi_tag}", got[0] if len(got) == 1 else None, want)
    print(f"select: {'all as intended' if not failures else f'{failures} not as intended'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
