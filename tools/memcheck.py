#!/usr/bin/env python3
"""Runs pytest under valgrind's memcheck and fails on any error whose stack passes through zthread's binary.

    python tools/memcheck.py [PYTEST_ARGS ...]     (default: the API, fuzzing and reliability tests, short)

Run it with the interpreter of a venv where zthread and the test requirements are installed
(`pip install .[test]`). CPython runs with PYTHONMALLOC=malloc, so every allocation is valgrind's to check;
the stress tests run briefly (ZTHREAD_STRESS_SECONDS=0.5, ZTHREAD_STRESS_RUNS=3), the differential fuzzer
with 40 examples a test rather than 250 (ZTHREAD_FUZZ_EXAMPLES; set it to 250 for the long run by hand: some
5.5 minutes rather than 2.5), and pytest's timeout is raised, because everything is ~30x slower. Child processes are not traced (the tests that start interpreters
check those by their exit status).

Reported: memcheck's errors (invalid reads and writes, uses of uninitialised values, bad frees, overlaps) and
"definitely lost" blocks of pytest's process. Errors with a frame in zthread's binary (in any process) and
lost blocks that zthread's own code allocated fail the run: CPython itself and libc leave a few of their
own, which are not ours to fix.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ["tests/test_api.py", "tests/test_fuzz_differential.py", "tests/test_reliability.py",
           "tests/test_start_thread.py", "tests/test_capi.py"]
OURS = re.compile(r"_zthread\.(abi3\.so|so)|zthread/zsrc|/zsrc/(core|py)/")


def blocks(log: str) -> list[str]:
    """valgrind's report, cut into one text per error or leak record."""
    out: list[str] = []
    current: list[str] = []
    for line in log.splitlines():
        body = re.sub(r"^==\d+== ?", "", line)
        if not body.strip():
            if current:
                out.append("\n".join(current))
                current = []
            continue
        current.append(body)
    if current:
        out.append("\n".join(current))
    return out


def is_error(block: str) -> bool:
    first = block.splitlines()[0]
    return bool(re.match(r"(Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|"
                         r"Mismatched free|Source and destination overlap|Argument '.*' of function)", first))


def is_definite_leak(block: str) -> bool:
    return "definitely lost in loss record" in block.splitlines()[0]


def allocated_by_zthread(leak: str) -> bool:
    """Whether zthread's own code called the allocator (malloc, calloc, realloc) for the lost block.
    A block that CPython allocated with zthread further up the stack (e.g. a string that
    PyDict_SetItemString interns at module init, and CPython 3.13 never frees) is CPython's."""
    frames = [line for line in leak.splitlines()[1:] if re.match(r"\s*(at|by) 0x", line)]
    return len(frames) > 1 and bool(OURS.search(frames[1]))


def main() -> int:
    if not shutil.which("valgrind"):
        print("memcheck: valgrind not found (apt-get install valgrind)", file=sys.stderr)
        return 1
    args = sys.argv[1:] or DEFAULT
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONMALLOC="malloc", ZTHREAD_STRESS_SECONDS="0.5", ZTHREAD_STRESS_RUNS="3",
                   ZTHREAD_FUZZ_EXAMPLES=os.environ.get("ZTHREAD_FUZZ_EXAMPLES", "40"))
        # One log per process: the tests' forked children (which leave other threads' memory behind when
        # they _exit, by design) report apart from pytest's own process.
        cmd = ["valgrind", "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite",
               "--errors-for-leak-kinds=definite", "--num-callers=40", f"--log-file={tmp}/valgrind.%p.log",
               # pytest's own script (not -m pytest, which would put the source folder first on sys.path)
               sys.executable, Path(sys.executable).parent / "pytest", "-p", "no:cacheprovider", "-q",
               "-o", "timeout=3000", *args]
        print("memcheck:", " ".join(map(str, cmd)), flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, env=env)
        logs = {path: path.read_text() for path in Path(tmp).glob("valgrind.*.log")}
    main_log = next((text for text in logs.values() if re.search(rf"Parent PID: {os.getpid()}\b", text)), "")
    children = [text for text in logs.values() if text is not main_log]
    records = blocks(main_log)
    errors = [b for b in records if is_error(b)]
    child_errors = [b for text in children for b in blocks(text) if is_error(b)]
    leaks = [b for b in records if is_definite_leak(b)]
    ours_errors = [b for b in errors + child_errors if OURS.search(b)]
    ours_leaks = [b for b in leaks if allocated_by_zthread(b)]
    summary = re.search(r"ERROR SUMMARY: .*", main_log)
    for b in ours_errors + ours_leaks:
        print("\n" + b)
    print(f"\nmemcheck: pytest exit status {proc.returncode}; valgrind {summary[0] if summary else 'gave no summary'}")
    for b in errors + child_errors:
        if b not in ours_errors:
            where = next((line.strip() for line in b.splitlines()[1:] if " at " in line or " by " in line), "")
            print(f"memcheck: not zthread's: {b.splitlines()[0]} {where}")
    print(f"memcheck: errors: {len(errors)} in pytest's process and {len(child_errors)} in its {len(children)} "
          f"forked children, {len(ours_errors)} with a frame in zthread")
    print(f"memcheck: definitely lost: {len(leaks)} records in all, {len(ours_leaks)} allocated by zthread")
    if proc.returncode != 0:
        return proc.returncode
    return 1 if ours_errors or ours_leaks else 0


if __name__ == "__main__":
    sys.exit(main())
