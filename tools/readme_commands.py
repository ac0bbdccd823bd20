"""The README's two commands, as CI runs them: read from the README itself, so that the two cannot drift apart.

    python3 tools/readme_commands.py list               the commands, one a line (exit 1 if the README lost them)
    python -I tools/readme_commands.py check-bench OUT  OUT, what the first (the main job) printed, has a row with
                                                        numbers for every metric of the installed zthread's bench

`.ci/run` runs each listed line with `bash -c`, in the clone's root, exactly as a user pastes it.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
# What each command must run, in order: the main job, then all the tests.
EXPECTED = ("-m zthread bench", "pytest")


def commands(readme: str) -> list[str]:
    """The command lines of the README's first ```sh block (comments and blank lines skipped)."""
    lines = readme.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "```sh") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "```")
    found = [line.strip() for line in lines[start:end] if line.strip() and not line.lstrip().startswith("#")]
    if len(found) != len(EXPECTED) or not all(part in cmd for part, cmd in zip(EXPECTED, found)):
        raise ValueError(f"the README's first sh block should hold {len(EXPECTED)} commands running {EXPECTED}, "
                         f"in that order; it holds {found}")
    return found


def bench_problems(output: str, metrics: list[str]) -> list[str]:
    """What is missing from the bench's table: every metric's row, with finite numbers for both sides and the
    ratio (`floor`, measured once, has one number)."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("zthread bench: ")), None)
    if start is None:
        return ["no bench table (its first line starts with 'zthread bench: ')"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[start + 1:] if line.split()}
    problems = []
    for name in metrics:
        fields = rows.get(name)
        numbers = [] if fields is None else [f for f in fields if f.replace(".", "", 1).lstrip("-").isdigit()]
        wanted = 1 if name == "floor" else 3
        if fields is None:
            problems.append(f"no row for {name}")
        elif len(numbers) != wanted or not all(math.isfinite(float(n)) for n in numbers):
            problems.append(f"{name}: expected {wanted} numbers, got {' '.join(fields)}")
    return problems


def main(argv: list[str]) -> int:
    if argv == ["list"]:
        try:
            print("\n".join(commands(README.read_text())))
        except (ValueError, StopIteration) as e:
            print(f"readme_commands: {README}: {e or 'no ```sh block'}", file=sys.stderr)
            return 1
        return 0
    if len(argv) == 2 and argv[0] == "check-bench":
        from zthread._bench import METRICS  # the installed zthread's

        problems = bench_problems(Path(argv[1]).read_text(), [m.name for m in METRICS])
        for problem in problems:
            print(f"readme_commands: the main job's output: {problem}", file=sys.stderr)
        return 1 if problems else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
