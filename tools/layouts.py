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
            defined: no free-threaded 3.14 can be had here, and its headers are the same files.
Exits 1 on any difference, or if a header set that CI must have is missing (without --this).
"""

from __future__ import annotations

import argparse
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
    return sets


def this_header_set() -> tuple[str, str, list[Path], list[str]]:
    include = Path(sysconfig.get_paths()["include"])
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
        print(f"{'FAIL' if diffs else 'ok  '} {abi} vs {what} ({include[0]})")
        for d in diffs:
            print(f"       {d}")
        failed += bool(diffs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
