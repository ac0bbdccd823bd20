#!/usr/bin/env python3
"""The CPython layouts zsrc/py/abi.zig declares by hand, compared with CPython's own headers.

    python3 tools/layouts.py                 every ABI against every set of headers found here (CI)
    python3 tools/layouts.py --this          this interpreter's ABI against its own headers (the pytest test)

For each pair, `zig build layouts -Dabi=ABI` prints abi.zig's sizes and offsets (zsrc/py/layouts.zig) and
tools/layouts.c, compiled by `zig cc` against the headers, prints the same keys; every key must agree:
  - abi3:   the headers of CPython 3.10-3.15 with the GIL, with Py_LIMITED_API=0x030a0000. The static module
            definition's header (`head_init`) is compared with 3.10's only: 3.12+ headers make it immortal,
            which a 3.10-built stable-ABI binary (what zthread ships) is not, and every version accepts both;
  - cp313t: free-threaded 3.13's headers (the 3.13t that tools/build-free-threaded-python.sh builds);
  - cp314t: 3.14's headers (Debian sid's libpython3.14-dev, from tools/fetch-pythons.sh) with Py_GIL_DISABLED
            defined: no free-threaded 3.14 can be had here, and its headers are the same files;
  - abi3t:  3.15's headers with Py_TARGET_ABI3T=0x030f0000 (PEP 803: no object layout; PySlot, PyABIInfo).
And the symbols: every function and datum the ABI's .def lists (zsrc/py/; abi.zig's declarations for that ABI)
is declared by those headers in that mode (a C file taking each one's address must compile): abi3 against
3.10's limited API, abi3t against 3.15's, so the binary uses nothing outside that ABI.
Exits 1 on any difference, or if a header set that CI must have is missing (without --this).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ROOT / ".pythons"


def pyenv_include(version: str) -> list[Path]:
    root = Path(subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() or
                Path.home() / ".pyenv")
    found = sorted(root.glob(f"versions/{version}.*/include/python{version}"))
    return found[-1:]


def sid_include(version: str) -> list[Path]:
    usr = PYTHONS / version / "root" / "usr" / "include"
    return [usr / f"python{version}", usr] if (usr / f"python{version}" / "Python.h").exists() else []


def header_sets() -> list[tuple[str, str, list[Path], list[str]]]:
    """(abi, description, include folders, defines) for every header set CI has."""
    limited = ["-DPy_LIMITED_API=0x030a0000"]
    sets = [("abi3", f"CPython {v}", pyenv_include(v), limited) for v in ("3.10", "3.11", "3.12", "3.13")]
    sets += [("abi3", f"CPython {v} (Debian sid)", sid_include(v), limited) for v in ("3.14", "3.15")]
    ft = PYTHONS / "3.13t" / "include" / "python3.13t"
    sets.append(("cp313t", "free-threaded CPython 3.13", [ft] if ft.exists() else [], []))
    sets.append(("cp314t", "CPython 3.14 (Debian sid) with Py_GIL_DISABLED", sid_include("3.14"),
                 ["-DPy_GIL_DISABLED=1"]))
    sets.append(("abi3t", "CPython 3.15 (Debian sid) with Py_TARGET_ABI3T", sid_include("3.15"), ABI3T))
    return sets


ABI3T = ["-DPy_TARGET_ABI3T=0x030f0000"]
DEFS = {"abi3": "python3", "cp313t": "free_threaded", "cp314t": "free_threaded", "abi3t": "python3t"}
# The .def symbols are checked against the oldest headers of the ABI (abi3: 3.10's, the binary's minimum).
SYMBOLS_CHECKED_WITH = {"abi3": "CPython 3.10", "cp313t": "free-threaded CPython 3.13",
                        "cp314t": "CPython 3.14 (Debian sid) with Py_GIL_DISABLED",
                        "abi3t": "CPython 3.15 (Debian sid) with Py_TARGET_ABI3T"}


def this_header_set() -> tuple[str, str, list[Path], list[str]]:
    include = Path(sysconfig.get_paths()["include"])
    if sys.version_info >= (3, 15):
        return "abi3t", f"this {sys.version.split()[0]} with Py_TARGET_ABI3T", [include, include.parent], ABI3T
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        return f"cp{sys.version_info[0]}{sys.version_info[1]}t", f"this {sys.version.split()[0]}t", [include], []
    return "abi3", f"this {sys.version.split()[0]}", [include, include.parent], ["-DPy_LIMITED_API=0x030a0000"]


def parse(text: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in text.splitlines() if line.strip())


def zig(*args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run([sys.executable, "-m", "ziglang", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"zig {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout + proc.stderr  # `zig build`'s run step prints the program's output on stderr


def undeclared(abi: str, include: list[Path], defines: list[str]) -> list[str]:
    """The symbols of the ABI's .def that the headers do not declare in that mode (compiler errors)."""
    lines = (ROOT / "zsrc" / "py" / f"{DEFS[abi]}.def").read_text().splitlines()
    names = [line.strip().removesuffix(" DATA") for line in lines[lines.index("EXPORTS") + 1:] if line.strip()]
    source = "#include <Python.h>\n#include <structmember.h>\nvoid *zthread_uses[] = {\n"
    source += "".join(f"    (void *)&{n},\n" for n in names) + "};\n"
    with tempfile.TemporaryDirectory() as tmp:
        c = Path(tmp) / "symbols.c"
        c.write_text(source)
        proc = subprocess.run([sys.executable, "-m", "ziglang", "cc", "-c", "-o", str(Path(tmp) / "symbols.o"),
                               "-Werror=implicit-function-declaration", *defines, *(f"-I{p}" for p in include),
                               str(c)], capture_output=True, text=True)
    if proc.returncode == 0:
        return []
    return sorted(set(re.findall(r"undeclared identifier '(\w+)'", proc.stderr))) or [proc.stderr[-2000:]]


def compare(abi: str, what: str, include: list[Path], defines: list[str]) -> list[str]:
    declared = parse(zig("build", "layouts", f"-Dabi={abi}"))
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "layouts"
        zig("cc", "-o", str(exe), *defines, *(f"-I{p}" for p in include), str(ROOT / "tools" / "layouts.c"))
        headers = parse(subprocess.run([exe], capture_output=True, text=True, check=True).stdout)
    if abi == "abi3" and what != "CPython 3.10":
        headers.pop("head_init")
        declared.pop("head_init")
    return [f"{key}: abi.zig {declared.get(key)}, headers {headers.get(key)}"
            for key in sorted(declared.keys() | headers.keys()) if declared.get(key) != headers.get(key)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--this", action="store_true", help="this interpreter's ABI and headers only")
    args = parser.parse_args()
    failed = 0
    for abi, what, include, defines in [this_header_set()] if args.this else header_sets():
        if not include:
            print(f"MISSING {abi} vs {what}: headers not found (tools/fetch-pythons.sh puts them in .pythons/)")
            failed += 1
            continue
        diffs = compare(abi, what, include, defines)
        if what == SYMBOLS_CHECKED_WITH.get(abi) or args.this:
            diffs += [f"{DEFS[abi]}.def: {n} is not declared by these headers" for n in undeclared(abi, include, defines)]
        print(f"{'FAIL' if diffs else 'ok  '} {abi} vs {what} ({include[0]})")
        for d in diffs:
            print(f"       {d}")
        failed += bool(diffs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
