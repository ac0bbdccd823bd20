"""Conformance: CPython's own test_thread, lock_tests (LockTests, RLockTests), test_threading and
test_threading_local (`_thread._local` as `threading.local`), and on 3.12+ its tests of threads in
subinterpreters (test_interpreters: closing and calling interpreters, stress; 3.14+: InterpreterPoolExecutor),
run on each interpreter twice, on CPython's `_thread` and with zthread swapped in as `_thread`, side by side.

    python tools/conformance.py [--quick] [--wheel WHEEL ...] [PYTHON ...]

With --quick (what CI runs), CPython's `_thread` runs only the tests that failed on zthread: a verdict needs
nothing else, and the run takes about half as long.

Each interpreter gets a fresh venv with the zthread wheel that fits it (a free-threaded CPython needs its
own cp3XXt wheel: without one given, zthread is built from this source by that interpreter's pip), and a
.pth file that swaps zthread in at
start-up when ZTHREAD_CONFORMANCE=1, so child processes and subinterpreters started by the suites run on
zthread too. A test that passes on CPython's `_thread` must pass on zthread, unless it is listed with its
reason in tools/conformance_exclusions.txt. Exits 1 on any other difference.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "tools" / "conformance_suite.py"
EXCLUSIONS = ROOT / "tools" / "conformance_exclusions.txt"
PTH_LINE = 'import os; exec("import zthread; zthread.install()") if os.environ.get("ZTHREAD_CONFORMANCE") == "1" else None\n'
SUITES = ("test_thread", "lock_tests", "test_threading", "test_threading_local", "test_interpreters", "interpreter_pool")


def load_exclusions() -> dict[str, str]:
    """`<minor or *> <test id>  # reason` lines -> {"3.13 test.id": reason}."""
    out: dict[str, str] = {}
    for line in EXCLUSIONS.read_text().splitlines():
        body, _, reason = line.partition("#")
        fields = body.split()
        if len(fields) == 2:
            out[f"{fields[0]} {fields[1]}"] = reason.strip()
    return out


def build_wheel(dest: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dest), str(ROOT)], check=True)
    return next(dest.glob("zthread-*.whl"))


def make_venv(python: str, wheel: Path | None, where: Path) -> Path:
    """A venv of `python` with `wheel`, or, if None, zthread built from this source (pip install .)."""
    subprocess.run([python, "-m", "venv", str(where)], check=True)
    venv_python = where / "bin" / "python"
    subprocess.run([str(venv_python), "-m", "pip", "install", "-q", "--no-deps", str(wheel or ROOT)], check=True)
    purelib = subprocess.run(
        [str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    Path(purelib, "zthread_conformance.pth").write_text(PTH_LINE)
    return venv_python


def run_side(venv_python: Path, on_zthread: bool, work: Path, only: list[str] | None = None) -> list[dict[str, str]]:
    """Every test on one side, or only the tests with ids in `only`."""
    out = work / ("zthread.json" if on_zthread else "cpython.json")
    args = [str(venv_python), "-X", "faulthandler", str(SUITE), str(out)]
    if only is not None:
        (work / "only.json").write_text(json.dumps(only))
        args.append(str(work / "only.json"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.pop("ZTHREAD_CONFORMANCE", None)
    if on_zthread:
        env["ZTHREAD_CONFORMANCE"] = "1"
    proc = subprocess.run(
        args,
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=3000,
    )
    (work / ("zthread.log" if on_zthread else "cpython.log")).write_text(proc.stdout + proc.stderr)
    if not out.exists():
        raise SystemExit(f"{venv_python}: the suite wrote no results (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    records: list[dict[str, str]] = json.loads(out.read_text())
    if proc.returncode != 0:
        records.append({"suite": "(runner)", "test": "(process)", "outcome": "fail", "detail": proc.stderr[-4000:]})
    return records


def minor_of(python: str) -> str:
    """"3.13", or "3.13t" for a free-threaded build."""
    code = "import sys, sysconfig; print('%d.%d' % sys.version_info[:2] + ('t' if sysconfig.get_config_var('Py_GIL_DISABLED') else ''))"
    return subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def wheel_for(minor: str, wheels: list[Path]) -> Path | None:
    """The given wheel that installs on `minor` (as `tools/wheels.py select` checks pip's choice): abi3t on 3.15
    and later, with or without the GIL; cp313-cp313t on 3.13t, cp314-cp314t on 3.14t; cp310-abi3 on the others."""
    major, rest = minor.split(".")
    version = (int(major), int(rest.rstrip("t")))
    want = "abi3.abi3t" if version >= (3, 15) else "cp" + minor.replace(".", "") if minor.endswith("t") else "abi3"
    return next((w for w in wheels if w.name.split("-")[-2] == want), None)


def compare(minor: str, cpython: list[dict[str, str]], zthread: list[dict[str, str]],
            exclusions: dict[str, str]) -> tuple[list[str], list[str]]:
    base = {r["test"]: r for r in cpython}
    problems: list[str] = []
    excused: list[str] = []
    for r in zthread:
        if r["outcome"] != "fail":
            continue
        ref = base.get(r["test"])
        if ref is not None and ref["outcome"] == "fail":
            continue  # fails on CPython's own _thread too
        for key in (f"{minor} {r['test']}", f"{minor.rstrip('t')} {r['test']}", f"* {r['test']}"):
            if key in exclusions:
                excused.append(f"  excluded: {r['test']}  ({exclusions[key]})")
                break
        else:
            problems.append(f"  FAIL on zthread only: {r['test']}\n" + "\n".join("      " + l for l in r["detail"].splitlines()[-12:]))
    return problems, excused


def counts(records: list[dict[str, str]], suite: str) -> str:
    c = Counter(r["outcome"] for r in records if r["suite"] == suite)
    return f"{c['pass']:4d} pass {c['fail']:3d} fail {c['skip']:3d} skip"


def failed_cases(records: list[dict[str, str]]) -> list[str]:
    """The ids that run again the tests that failed (a subtest's test as a whole)."""
    return sorted({r["case"] for r in records if r["outcome"] == "fail" and r["suite"] != "(runner)"})


def default_pythons() -> list[str]:
    found = []
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for minor in ("3.10", "3.11", "3.12", "3.13"):
        cands = sorted(root.glob(f"{minor}.*/bin/python"))
        if cands:
            found.append(str(cands[-1]))
    extra = ROOT / ".pythons"  # 3.14/, 3.15/ (not 3.13t/, 3.14d/ or arm64/, which are for other checks)
    if extra.exists():
        found += [str(d / "bin" / f"python{d.name}") for d in sorted(extra.iterdir())
                  if re.fullmatch(r"3\.\d+", d.name) and (d / "bin" / f"python{d.name}").is_file()]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, action="append", default=[],
                        help="zthread wheel to test, the one that fits each interpreter (default: build one)")
    parser.add_argument("--quick", action="store_true",
                        help="run every test on zthread, and on CPython's _thread only those that failed on zthread "
                             "(all the verdict needs; about half the time; CPython's column then counts those re-runs)")
    parser.add_argument("pythons", nargs="*", help="interpreters (default: pyenv's 3.10-3.13 and .pythons/)")
    opts = parser.parse_args()
    exclusions = load_exclusions()
    failed = False
    passed_total = 0
    failed_total = 0
    with tempfile.TemporaryDirectory(prefix="zthread-conformance-") as tmp:
        work_root = Path(tmp)
        wheels = opts.wheel or [build_wheel(work_root / "wheel")]
        cpython_title = "CPython _thread (re-runs)" if opts.quick else "CPython _thread"
        print(f"{'python':8} {'suite':21} {cpython_title:>28}   {'zthread':>28}")
        for python in opts.pythons or default_pythons():
            minor = minor_of(python)
            work = work_root / minor
            work.mkdir()
            venv_python = make_venv(python, wheel_for(minor, wheels), work / "venv")
            if opts.quick:
                zthread = run_side(venv_python, True, work)
                cpython = run_side(venv_python, False, work, only=failed_cases(zthread))
            else:
                cpython = run_side(venv_python, False, work)
                zthread = run_side(venv_python, True, work)
            for suite in SUITES + ("(runner)",):
                if not any(r["suite"] == suite for r in cpython + zthread):
                    continue  # not on this version
                print(f"{minor:8} {suite:21} {counts(cpython, suite):>28}   {counts(zthread, suite):>28}")
            problems, excused = compare(minor, cpython, zthread, exclusions)
            for line in excused + problems:
                print(line)
            failed = failed or bool(problems)
            passed_total += sum(r["outcome"] == "pass" for r in zthread)
            failed_total += len(problems)
            sys.stdout.flush()
    print(f"conformance: {passed_total} passed, {failed_total} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
