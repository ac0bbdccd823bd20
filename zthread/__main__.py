"""``python -m zthread``: ``bench`` (zthread against CPython's ``_thread``) and ``run`` (a program on zthread)."""

from __future__ import annotations

import sys

USAGE = """usage: python -m zthread COMMAND ...

commands:
  bench [--apps] [--json] [--only NAMES] [--rounds N] [--quick]
                                                         zthread side by side with CPython's _thread
  run SCRIPT [ARGS...] | run -m MODULE [ARGS...]         run a program with threading on zthread
"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "bench":
        from zthread._bench import main as bench

        return bench(rest)
    if command == "run":
        from zthread._run import run

        run(rest)
        return 0
    print(f"unknown command {command!r}\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
