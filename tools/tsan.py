"""ThreadSanitizer: zthread's free-threaded tests on a TSan-built CPython 3.13t, with zthread built with TSan.

    python tools/tsan.py TSAN_PYTHON [PYTEST_ARGS ...]   (test files or ids among them replace the default)

TSAN_PYTHON is a free-threaded 3.13t built with --with-thread-sanitizer (tools/build-free-threaded-python.sh
DEST --tsan). zthread is built for it with `zig build -Dabi=cp313t -Dtsan-module` (build.zig: the module's
instrumented code uses the interpreter's TSan runtime) into a temporary folder with the package's Python
files. The tests run under pytest with the pure-Python test requirements (pytest, pytest-timeout, hypothesis)
of the interpreter running this script, which must be a free-threaded 3.13 venv with `.[test]` installed (as
.ci/run's venv-3.13t): the TSan build shares its ABI.

CPython's known reports are suppressed by its own file (Tools/tsan/suppressions_free_threading.txt, kept
beside the TSan build). Every other report is written to a log; the run fails if zthread's code made one of
a report's racing accesses (a zthread frame above the first frame of Python code in an access stack: the
threads zthread starts have zthread frames under all the Python code they run), or if the tests fail. Reports with no zthread frame (CPython's own, not in its file) are
counted and shown, and do not fail the run.

Default tests: tests/test_free_threaded.py at its short sizes (ZTHREAD_FT_* variables give longer runs).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TESTS = ["tests/test_free_threaded.py"]


def build(tsan_python: Path, dest: Path) -> None:
    """zthread (the package's Python files and the TSan-instrumented module) into dest/zthread."""
    suffix = subprocess.run([str(tsan_python), "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"],
                            check=True, capture_output=True, text=True).stdout.strip()
    prefix = dest / "zig-out"
    subprocess.run([sys.executable, "-m", "ziglang", "build", "-Doptimize=ReleaseSafe", "-Dabi=cp313t",
                    "-Dtsan-module=true", "--prefix", str(prefix)], cwd=ROOT, check=True)
    package = dest / "zthread"
    shutil.copytree(ROOT / "zthread", package)
    shutil.copy(prefix / "lib" / "_zthread.so", package / f"_zthread{suffix}")


def reports(log_dir: Path) -> list[str]:
    """Every TSan report in the log files (one file per process)."""
    found: list[str] = []
    for log in sorted(log_dir.glob("tsan*")):
        text = log.read_text(errors="replace")
        found += re.findall(r"^WARNING: ThreadSanitizer:.*?^=+$", text, re.M | re.S)
    return found


ACCESS = re.compile(r"^  (Previous )?(atomic |Atomic )?(read|write|Read|Write) of size")
EVAL = "_PyEval_EvalFrameDefault"


def is_zthreads(report: str) -> bool:
    """True if zthread's code made one of the racing accesses: in one of the report's access stacks, a frame in
    zthread's module comes before the first frame of Python code. (Every thread zthread starts has zthread
    frames at the bottom of its stack, under the Python code it runs, and in its "created at" stack: those
    alone say nothing of who raced.)"""
    in_access = False
    for line in report.splitlines():
        if not line.startswith("    #"):
            in_access = bool(ACCESS.match(line))
            seen_eval = False
            continue
        if not in_access or seen_eval:
            continue
        if EVAL in line:
            seen_eval = True
        elif "_zthread" in line or "/zsrc/" in line:
            return True
    return False


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    tsan_python = Path(sys.argv[1]).absolute()
    extra = sys.argv[2:]
    tests = extra if any(a.endswith(".py") or "::" in a for a in extra) else DEFAULT_TESTS + extra
    suppressions = tsan_python.parent.parent / "suppressions_free_threading.txt"
    if not suppressions.exists():
        raise SystemExit(f"tsan: {suppressions} is missing (tools/build-free-threaded-python.sh DEST --tsan keeps it)")
    with tempfile.TemporaryDirectory(prefix="zthread-tsan-") as tmp:
        work = Path(tmp)
        build(tsan_python, work)
        log_dir = work / "logs"
        log_dir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        # A venv of the TSan build (no pip: installing under TSan is slow) that sees zthread first, then the
        # pytest and hypothesis of this (3.13t) venv: pure Python, same ABI. A .pth file, not PYTHONPATH, so
        # the tests' `python -I` children see them too.
        subprocess.run([str(tsan_python), "-m", "venv", "--without-pip", str(work / "venv")], check=True)
        purelib = subprocess.run([str(work / "venv" / "bin" / "python"), "-c",
                                  "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        Path(purelib, "zthread_tsan.pth").write_text(f"{work}\n{sysconfig.get_paths()['purelib']}\n")
        loaded = subprocess.run([str(work / "venv" / "bin" / "python"), "-I", "-c",
                                 "from zthread import _zthread; print(_zthread.__file__)"],
                                check=True, capture_output=True, text=True, env=env).stdout.strip()
        if not loaded.startswith(str(work)):
            raise SystemExit(f"tsan: the tests would load {loaded}, not the TSan build")
        env.setdefault("ZTHREAD_FT_WAIT", "900")  # TSan runs the tests 10-20 times slower
        # exitcode=0: a process with reports keeps its own exit status (TSan's default, 66, would fail pytest and
        # every child a test checks on CPython's own races); the reports are judged below, by their frames.
        env["TSAN_OPTIONS"] = (f"suppressions={suppressions} log_path={log_dir}/tsan halt_on_error=0 "
                               "second_deadlock_stack=1 exitcode=0")
        started = time.monotonic()
        # -p no:cacheprovider etc. come from pyproject.toml; the tests import the zthread put first on the path.
        # -P: the repository root (the source folder zthread/, which has no binary) stays off sys.path.
        proc = subprocess.run([str(work / "venv" / "bin" / "python"), "-P", "-m", "pytest", "--timeout=600", *tests],
                              cwd=ROOT, env=env)
        elapsed = time.monotonic() - started
        found = reports(log_dir)
        ours = [r for r in found if is_zthreads(r)]
        for r in found:
            print(("ZTHREAD " if r in ours else "cpython ") + r + "\n", file=sys.stderr)
        print(f"tsan: {' '.join(tests)} on {tsan_python} ({elapsed:.0f} s): pytest exit {proc.returncode}; "
              f"{len(ours)} report(s) with a zthread frame, {len(found) - len(ours)} without (CPython's own, "
              f"not in its suppressions file)")
        return 1 if proc.returncode != 0 or ours else 0


if __name__ == "__main__":
    sys.exit(main())
