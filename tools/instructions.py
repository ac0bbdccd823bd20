#!/usr/bin/env python3
"""Instructions per operation, zthread against CPython's `_thread`: the bench's single-threaded metrics, counted by
valgrind's callgrind.

    python3 tools/instructions.py [--only acq_rel,with] [--loops 20000] [--own] [--json] [PYTHON ...]

`python -m zthread bench` measures time, and on a VM its nanoseconds move by 5-15 % from run to run (the host's
other guests, frequency, where the code landed in the caches). The number of instructions an operation executes
does not move: it is what the code does, the same on every run. This tool counts it for the bench's metrics that
run in one thread: the primitives `acq_rel`, `with`, `try_fail`, `timed_free`, `locked`, `get_ident`, `alloc`, and
`floor` (two calls of a C method that does nothing, CPython's side only); and two workloads of `bench --apps`,
`semaphore` and `rlock_with`, with `threading` on each side's `_thread`.

Each count runs the bench's own loop (`zthread._bench`, `zthread._apps`) in a fresh interpreter under callgrind:
per side and metric three times, for `N`, `N + loops` and `N + 2 * loops` iterations (`N` = 2,000, past the
interpreter's specialization of the loop). The interpreter's start and the warm-up are the same in the three runs,
so the difference of two counts, divided by the operations added, is the instructions per operation. Both differences
are compared, and the tool fails if they disagree by more than 1 %: a count that is not linear in the loop is
not a count of the loop.

Instructions are not time. A locked compare-and-swap, a cache miss or a mispredicted branch costs many cycles
and counts one; the system calls' work in the kernel is not counted at all. So these figures say which side's
code does more work, not which is faster: the bench says that. They settle what the bench's noise cannot, for
example whether a change to a fast path removed instructions.

`--own` also counts zthread's own share of its side's instructions per operation: those executed in its extension,
and in the C-API functions its code calls (callgrind's inclusive cost of those calls). Take them away and what is
left is what the same loop would run over a lock whose methods executed nothing (the interpreter's calls of the
methods stay: any C `_thread` is called the same way): `ratio_without_own`, the best ratio any lock could reach.

PYTHON: interpreters that have zthread installed (default: this one), one after the other. Each child runs in a
temporary directory, so it imports the installed zthread, not a source tree, with `-s`, no `PYTHON*` variable and
PYTHONHASHSEED=0: string hashes that change from run to run would change the start's count by hundreds of
thousands of instructions, and the differences with it. So fixed, the same binary gives the same counts run after
run. The loops that allocate (`alloc`, `get_ident`'s ints) depend on the heap the loop starts from, so their counts
move by a few per cent when what the child imports first changes. Needs `valgrind`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from typing import Any

PRIMITIVES = ("acq_rel", "with", "try_fail", "timed_free", "locked", "get_ident", "alloc", "floor")
WORKLOADS = ("semaphore", "rlock_with")  # bench --apps workloads that run in one thread: `threading` on each side
METRICS = PRIMITIVES + WORKLOADS
# Operations an iteration of each loop runs: 5 for the primitives (floor: 5 pairs of calls), 2 acquire+release
# pairs for `semaphore`, 2 outer `with` blocks for `rlock_with` (the units the bench reports).
OPS_PER_ITERATION = {**dict.fromkeys(PRIMITIVES, 5), "semaphore": 2, "rlock_with": 2}
WARM = 2_000
LINEARITY = 0.01

CHILD = """
import sys
name, side, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
from zthread import _apps, _bench
if name in %r:
    _apps.run_app(side, name, n)  # zthread.install() first on zthread's side; checked
else:
    import _thread
    from zthread import _zthread
    {m.name: m for m in _bench.METRICS}[name].run(_zthread if side == "zthread" else _thread, n)
""" % (WORKLOADS,)


def child_env() -> dict[str, str]:
    """No PYTHON* variable but a fixed hash seed: with a random one (and `-I` ignores PYTHONHASHSEED) the start's
    dict lookups differ from run to run, by hundreds of thousands of instructions."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONHASHSEED"] = "0"
    return env


def run_child(python: str, metric: str, side: str, iterations: int, cwd: str,
              under: list[str]) -> subprocess.CompletedProcess[str]:
    """One run of `metric`'s loop of `iterations` on `side` in a fresh interpreter, under the command `under`
    (callgrind, or nothing); fails the tool if the child failed."""
    proc = subprocess.run([*under, python, "-s", "-c", CHILD, metric, side, str(iterations)],
                          capture_output=True, text=True, cwd=cwd, env=child_env())
    if proc.returncode != 0:
        raise SystemExit(f"instructions: {python} {metric} {side} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc


def count(python: str, metric: str, side: str, iterations: int, cwd: str, own: bool = False) -> tuple[int, int]:
    """Instructions callgrind counted for one run of `metric`'s loop of `iterations` on `side`, start to exit; and,
    if `own`, how many of them were zthread's own (`own_instructions`), else 0."""
    out = os.path.join(cwd, "callgrind.out") if own else "/dev/null"
    # --dump-instr=no: one position column (line numbers), as own_instructions reads it, whatever VALGRIND_OPTS says
    proc = run_child(python, metric, side, iterations, cwd,
                     ["valgrind", "--tool=callgrind", "--dump-instr=no", f"--callgrind-out-file={out}"])
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if not found:
        raise SystemExit(f"instructions: {python} {metric} {side}: no count from callgrind:\n{proc.stderr[-2000:]}")
    if not own:
        return int(found.group(1)), 0
    with open(out, encoding="utf-8", errors="replace") as f:
        mine = own_instructions(f, OWN_OBJECT)
    os.unlink(out)
    return int(found.group(1)), mine


# The object file of zthread's code in callgrind's output: `zthread/_zthread.abi3.so`, `.abi3t.so`, `.cpython-313t-...`.
OWN_OBJECT = re.compile(r"[/\\]zthread[/\\]_zthread\.[^/\\]*$")


def own_instructions(lines: Iterable[str], own_object: re.Pattern[str]) -> int:
    """From a callgrind output file (one event, Ir, as callgrind writes it by default): the instructions executed
    in the object file `own_object` matches, and in what its code called in other objects (the C-API functions it
    calls, counted inclusively). What is left of a run is what any implementation of the same methods would also
    run: the interpreter, and its calls of those methods (the call itself, to the first instruction of the method).

    The format (valgrind's docs, "Callgrind Format Specification"): `ob=` names the object of the cost lines that
    follow, with `(id) name` the first time and `(id)` after; `cob=` the called object of the next `calls=` line,
    whose next cost line is the call's inclusive cost, not the caller's own; a cost line is a position and the
    costs, trailing zeros left out."""
    names: dict[str, str] = {}

    def name(spec: str) -> str:
        spec = spec.strip()
        m = re.match(r"\((\d+)\)\s*(.*)", spec)
        if not m:
            return spec
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), "")

    total = 0
    ob = callee = ""
    in_own = callee_own = call_next = False
    for line in lines:
        head = line[:1]
        if head and (head.isdigit() or head in "+-*"):
            fields = line.split()
            cost = int(fields[1]) if len(fields) > 1 else 0
            if call_next:
                if in_own and not callee_own:
                    total += cost  # zthread's call of a C-API function, inclusive
                call_next, callee = False, ""
            elif in_own:
                total += cost
        elif line.startswith("ob="):
            ob = name(line[3:])
            in_own = bool(own_object.search(ob))
        elif line.startswith("cob="):
            callee = name(line[4:])
        elif line.startswith("calls="):
            callee_own = bool(own_object.search(callee or ob))
            call_next = True
    return total


def per_op(python: str, metric: str, side: str, loops: int, cwd: str,
           own: bool = False) -> tuple[float, float, float]:
    """Instructions per operation from the two steps N -> N + loops -> N + 2 * loops; and zthread's own per
    operation (N -> N + 2 * loops) if `own`, else 0."""
    # One run first, not counted: an import that writes its bytecode cache (the first run of a module after the
    # interpreter was installed, for example Debian's, which ships no .pyc) would be counted in the first step only.
    run_child(python, metric, side, WARM, cwd, [])
    # zthread's own is read from the first and last runs' output (the middle one's is not needed)
    (a, a_own), (b, _), (c, c_own) = (count(python, metric, side, WARM + k * loops, cwd, own and k != 1)
                                      for k in range(3))
    ops = OPS_PER_ITERATION[metric] * loops
    return (b - a) / ops, (c - b) / ops, (c_own - a_own) / (2 * ops)


def measure(python: str, metrics: list[str], loops: int, own: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        version = subprocess.run([python, "-s", "-c", "from zthread import _bench; print(_bench.python_version())"],
                                 check=True, capture_output=True, text=True, cwd=tmp, env=child_env()).stdout.strip()
        rows = []
        for metric in metrics:
            row: dict[str, Any] = {"metric": metric}
            for side in ("cpython", "zthread") if metric != "floor" else ("cpython",):
                print(f"instructions: {version} {metric} {side}", file=sys.stderr, flush=True)
                first, second, mine = per_op(python, metric, side, loops, tmp, own and side == "zthread")
                if abs(first - second) > LINEARITY * max(first, second):
                    raise SystemExit(f"instructions: {version} {metric} {side}: {first:.1f} then {second:.1f} per "
                                     "operation; not linear in the loop, not a count of it")
                row[side] = (first + second) / 2
                if own and side == "zthread":
                    row["zthread_own"] = mine
            if "zthread" in row:
                row["ratio"] = row["zthread"] / row["cpython"]
            if "zthread_own" in row:
                # The ratio a lock whose methods ran no instruction of their own would have: the rest is the same
                # for any implementation.
                row["ratio_without_own"] = (row["zthread"] - row["zthread_own"]) / row["cpython"]
            rows.append(row)
    return {"python": version, "loops": loops, "unit": "instructions per operation", "metrics": rows}


def table(docs: list[dict[str, Any]]) -> str:
    """Markdown: a row per metric, a column per interpreter, each cell `ratio (zthread / CPython)`."""
    lines = ["| instructions per op | " + " | ".join(d["python"] for d in docs) + " |",
             "|---" * (len(docs) + 1) + "|"]
    for i, metric in enumerate(m["metric"] for m in docs[0]["metrics"]):
        cells = []
        for d in docs:
            r = d["metrics"][i]
            own = f"; own {r['zthread_own']:.0f}, without it {r['ratio_without_own']:.2f}" if "zthread_own" in r else ""
            cells.append(f"{r['cpython']:.0f} (two C calls)" if metric == "floor" else
                         f"{r['ratio']:.2f} ({r['zthread']:.0f} / {r['cpython']:.0f}{own})")
        lines.append(f"| `{metric}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("pythons", nargs="*", help="interpreters with zthread installed (default: this one)")
    parser.add_argument("--only", help="comma-separated metrics (default: all of " + ", ".join(METRICS) + ")")
    parser.add_argument("--loops", type=int, default=20_000, help="iterations each step adds (default 20000)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--own", action="store_true",
                        help="also count zthread's own instructions per operation (its extension's code and the C-API "
                             "functions it calls) and the ratio without them: what any lock's methods would leave")
    opts = parser.parse_args(argv)
    if not shutil.which("valgrind"):
        parser.error("valgrind is not installed")
    metrics = opts.only.split(",") if opts.only else list(METRICS)
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        parser.error(f"unknown metric(s): {', '.join(unknown)}; known: {', '.join(METRICS)}")
    if opts.loops < 100:
        parser.error("--loops must be at least 100")
    docs = [measure(p, metrics, opts.loops, opts.own) for p in opts.pythons or [sys.executable]]
    print(json.dumps(docs, indent=2) if opts.json else table(docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
