#!/usr/bin/env python3
"""The README's results table: `python -m zthread bench --json` on every interpreter, side by side.

    python3 tools/bench_table.py --wheel dist/zthread-...-manylinux_2_17_x86_64.whl PYTHON [PYTHON ...]
    python3 tools/bench_table.py ... --update-readme     # rewrite the table between the README's markers

Each interpreter gets a fresh venv with zthread installed (the wheel given, or this source tree; a free-threaded
interpreter, for which the cp310-abi3 wheel is not, always gets this source tree), then runs the
bench in it, one interpreter after the other (never two at once: they would share the CPUs). Each cell is the
ratio zthread/CPython of the medians, the first and third quartiles of the rounds' own ratios in brackets, and both
medians after it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"


def bench(python: str, install: str, rounds: int, sets: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([python, "-m", "venv", venv], check=True)
        free_threaded = subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(bool(sysconfig.get_config_var('Py_GIL_DISABLED')))"],
                                       check=True, capture_output=True, text=True).stdout.strip() == "True"
        if free_threaded and install.endswith(".whl") and "-abi3-" in install:
            install = str(ROOT)
        subprocess.run([venv / "bin" / "pip", "install", "--quiet", install], check=True)
        print(f"bench-table: {python}", file=sys.stderr, flush=True)
        doc: dict[str, Any] = {}
        for which in sets:  # the primitives, then the threading workloads (--apps), in one table
            flags = ["--apps"] if which == "apps" else []
            out = subprocess.run([venv / "bin" / "python", "-I", "-m", "zthread", "bench", "--json", "--rounds",
                                  str(rounds), *flags], check=True, capture_output=True, text=True, cwd=tmp)
            part = json.loads(out.stdout)
            doc = {**part, "metrics": doc.get("metrics", []) + part["metrics"]} if doc else part
        return doc


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def table(docs: list[dict[str, Any]]) -> str:
    versions = [d["python"] for d in docs]
    first = docs[0]
    lines = [
        f"Machine: {first['platform']}, {first['cpus']} CPUs ({cpu_model()}); {first['rounds']} interleaved rounds "
        "per side, medians. Cell: ratio zthread/CPython [the middle half of the rounds' own ratios: first and third "
        "quartile] (zthread / CPython's `_thread`); below 1 means zthread is faster or smaller.",
        "",
        "| metric | " + " | ".join(versions) + " |",
        "|---|" + "---|" * len(versions),
    ]
    names = [m["metric"] for m in first["metrics"]]
    for name in names:
        cells = []
        for d in docs:
            m = next(x for x in d["metrics"] if x["metric"] == name)
            if name == "floor":
                cells.append(f"{m['cpython']:.1f} {m['unit']}")
            else:
                quartiles = m.get("round_ratio_quartiles")
                spread = f" [{quartiles[0]:.2f}, {quartiles[1]:.2f}]" if quartiles else ""
                cells.append(f"{m['ratio']:.2f}{spread} ({m['zthread']:.1f} / {m['cpython']:.1f} {m['unit']})")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pythons", nargs="+")
    parser.add_argument("--wheel", help="install this wheel (default: the source tree)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument("--sets", default="primitives,apps",
                        help="comma-separated: primitives (bench), apps (bench --apps); with --update-readme, "
                             "only these sets' rows are replaced (the columns must be the same interpreters)")
    args = parser.parse_args()
    sets = args.sets.split(",")
    docs = [bench(p, args.wheel or str(ROOT), args.rounds, sets) for p in args.pythons]
    text = table(docs)
    print(text)
    if args.update_readme:
        readme = README.read_text()
        head, _, rest = readme.partition(START)
        old, _, tail = rest.partition(END)
        if not rest:
            print(f"bench-table: no {START} marker in README.md", file=sys.stderr)
            return 1
        if set(sets) != {"primitives", "apps"}:
            text = merge(old.strip(), text)
        README.write_text(f"{head}{START}\n{text}\n{END}{tail}")
    return 0


def merge(old: str, new: str) -> str:
    """The old table with the new table's rows put in place of (or after) the old rows of the same metric."""
    old_lines, new_lines = old.splitlines(), new.splitlines()
    header = next(i for i, line in enumerate(new_lines) if line.startswith("| metric"))
    if header >= len(old_lines) or old_lines[header] != new_lines[header]:
        raise SystemExit("bench-table: the README's table has other columns; measure every set (--sets primitives,apps)")
    rows = {line.split(" | ")[0]: line for line in new_lines[header + 2:]}
    merged = [rows.pop(line.split(" | ")[0], line) for line in old_lines]
    return "\n".join(merged + list(rows.values()))


if __name__ == "__main__":
    os.environ.pop("PYTHONPATH", None)
    sys.exit(main())
