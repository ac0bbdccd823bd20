"""Subinterpreters for the tests, on whatever API the running CPython has (the tests folder is on sys.path).

- 3.12: `_xxsubinterpreters.create(isolated=True)`, 3.13: `_interpreters.create()` (the "isolated" config),
  3.14+: `concurrent.interpreters.create()`: an isolated interpreter with a GIL of its own, running in
  parallel with the others.
- 3.10, 3.11: `_xxsubinterpreters.create()`, a legacy subinterpreter that shares the main GIL.

`Interpreter.run(code)` runs `code` there (in the calling thread) and returns what it passed to `report(value)`
(JSON values), raising `Failed` with the interpreter's own traceback if the code raised.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import tempfile
from typing import Any

LOW_LEVEL = "_interpreters" if sys.version_info >= (3, 13) else "_xxsubinterpreters"
AVAILABLE = importlib.util.find_spec(LOW_LEVEL) is not None
"""Whether this CPython can make subinterpreters from Python at all (a build may leave the module out)."""
OWN_GIL = AVAILABLE and sys.version_info >= (3, 12)
"""Whether the running CPython has isolated interpreters with a GIL of their own."""


class Failed(Exception):
    """The code run in a subinterpreter raised; the message is the interpreter's account of it."""


def _low_level() -> Any:
    return importlib.import_module(LOW_LEVEL)


class Interpreter:
    """One subinterpreter, closed by `close()` or at the end of a `with` block."""

    def __init__(self) -> None:
        self._low = _low_level()
        self._high: Any = None
        if sys.version_info >= (3, 14):
            self._high = importlib.import_module("concurrent.interpreters").create()
            self.id = self._high.id
        elif sys.version_info >= (3, 12):
            self.id = self._low.create() if sys.version_info >= (3, 13) else self._low.create(isolated=True)
        else:
            self.id = self._low.create()
        self._closed = False

    def exec(self, code: str) -> None:
        """Runs `code` in the interpreter's __main__; `Failed` if it raised."""
        if self._high is not None:
            try:
                self._high.exec(code)
            except importlib.import_module("concurrent.interpreters").ExecutionFailed as e:
                raise Failed(str(e)) from None
        elif sys.version_info >= (3, 13):
            excinfo = self._low.exec(self.id, code)
            if excinfo is not None:
                raise Failed(getattr(excinfo, "formatted", str(excinfo)))
        else:
            try:
                self._low.run_string(self.id, code)
            except self._low.RunFailedError as e:
                raise Failed(str(e)) from None

    def run(self, code: str) -> list[Any]:
        """Runs `code` with a `report(value)` function defined; returns the values reported, in order."""
        fd, path = tempfile.mkstemp(prefix="zthread-subinterp-", suffix=".jsonl")
        os.close(fd)
        prelude = (
            "def report(value, _path=%r):\n"
            "    import json\n"
            "    with open(_path, 'a') as f:\n"
            "        f.write(json.dumps(value) + '\\n')\n" % path
        )
        try:
            self.exec(prelude + code)
            with open(path) as f:
                return [json.loads(line) for line in f]
        finally:
            os.unlink(path)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._high is not None:
            self._high.close()
        else:
            self._low.destroy(self.id)

    def __enter__(self) -> Interpreter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def own_gil(interp: Interpreter) -> bool | None:
    """Whether `interp` has a GIL of its own, as its configuration says (3.13+; None where it cannot be read)."""
    if sys.version_info < (3, 13):
        return None
    config = _low_level().get_config(interp.id)
    return bool(config.gil == "own")
