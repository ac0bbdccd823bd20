"""``python -m zthread run``: start a program with ``threading`` (and everything on it) running on zthread."""

from __future__ import annotations

import os
import runpy
import sys

import zthread


def run(argv: list[str]) -> None:
    """``argv`` is ``[script, *args]`` or ``["-m", module, *args]``, as after ``python``.

    The program runs as ``__main__`` with ``sys.argv`` and ``sys.path[0]`` as ``python`` would set them;
    its exit status is the process's (SystemExit propagates).
    """
    if not argv or argv[0] in ("-m",) and len(argv) < 2:
        raise SystemExit("usage: python -m zthread run SCRIPT [ARGS...] | -m MODULE [ARGS...]")
    zthread.install()
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        sys.path[0] = os.getcwd()
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")
