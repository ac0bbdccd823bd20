#!/usr/bin/env python3
"""Runs pytest under valgrind's memcheck and fails on any error whose stack passes through zthread's binary.

    python tools/memcheck.py [PYTEST_ARGS ...]     (default: the API, fuzzing and reliability tests, short)

Run it with the interpreter of a venv where zthread and the test requirements are installed
(`pip install .[test]`). CPython runs with PYTHONMALLOC=malloc, so every allocation is valgrind's to check;
the stress tests run briefly (ZTHREAD_STRESS_SECONDS=0.5, ZTHREAD_STRESS_RUNS=3) and pytest's timeout is
raised, because everything is ~30x slower. Child processes are not traced (the tests that start interpreters
check those by their exit status).

Reported: memcheck's errors (invalid reads and writes, uses of uninitialised values, bad frees, overlaps) and
"definitely lost" blocks, each counted in all and those with a frame in zthread's binary. Only the latter fail
the run: CPython itself and libc leave a few of their own, which are not ours to fix.
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
DEFAULT = ["tests/test_api.py", "tests/test_fuzz_differential.py", "tests/test_reliability.py"]
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


def main() -> int:
    if not shutil.which("valgrind"):
        print("memcheck: valgrind not found (apt-get install valgrind)", file=sys.stderr)
        return 1
    args = sys.argv[1:] or DEFAULT
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "valgrind.log"
        env = dict(os.environ, PYTHONMALLOC="malloc", ZTHREAD_STRESS_SECONDS="0.5", ZTHREAD_STRESS_RUNS="3")
        cmd = ["valgrind", "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite",
               "--errors-for-leak-kinds=definite", "--num-callers=40", f"--log-file={log_path}",
               sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "timeout=3000", *args]
        print("memcheck:", " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, env=env)
        log = log_path.read_text()
    records = blocks(log)
    errors = [b for b in records if is_error(b)]
    leaks = [b for b in records if is_definite_leak(b)]
    ours_errors = [b for b in errors if OURS.search(b)]
    ours_leaks = [b for b in leaks if OURS.search(b)]
    summary = next((b for b in records if b.startswith("ERROR SUMMARY")), "ERROR SUMMARY: (none)")
    for b in ours_errors + ours_leaks:
        print("\n" + b)
    print(f"\nmemcheck: pytest exit status {proc.returncode}; valgrind {summary.splitlines()[0]}")
    print(f"memcheck: errors: {len(errors)} in all, {len(ours_errors)} with a frame in zthread")
    print(f"memcheck: definitely lost: {len(leaks)} records in all, {len(ours_leaks)} with a frame in zthread")
    if proc.returncode != 0:
        return proc.returncode
    return 1 if ours_errors or ours_leaks else 0


if __name__ == "__main__":
    sys.exit(main())
