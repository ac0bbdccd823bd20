"""Child of tools/conformance.py: runs CPython's own thread test suites in THIS interpreter and writes
one JSON record per test (only the tests whose ids the JSON list in its second argument names, if given).
With ZTHREAD_CONFORMANCE=1 in the environment, the venv's .pth file has
already made zthread the `_thread` module (in this process, in its subinterpreters and in every child
process the suites start); the suite checks that before running anything."""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import unittest

PER_TEST_TIMEOUT_S = 180


def check_subinterpreters_swap_in() -> None:
    """The .pth file runs in every new interpreter too (3.12+: an isolated one, with its own GIL)."""
    if sys.version_info < (3, 12):
        return
    import importlib

    low = importlib.import_module("_interpreters" if sys.version_info >= (3, 13) else "_xxsubinterpreters")
    interp = low.create() if sys.version_info >= (3, 13) else low.create(isolated=True)
    try:
        code = "import _thread, zthread\nassert _thread is zthread._zthread, 'zthread not installed'\n"
        failure = low.exec(interp, code) if sys.version_info >= (3, 13) else low.run_string(interp, code)
        assert failure is None, f"zthread was not installed as _thread in a subinterpreter: {failure}"
    finally:
        low.destroy(interp)


def subinterpreter_suites(loader: unittest.TestLoader) -> dict[str, unittest.TestSuite]:
    """CPython's tests of threads in subinterpreters (test_threading's SubinterpThreadingTests run above): the
    closing and calling of interpreters with threads, the stress tests, and (3.14+) InterpreterPoolExecutor.
    The .pth file swaps zthread in within every interpreter they create."""
    if sys.version_info < (3, 12):
        return {}
    if sys.version_info < (3, 13):  # one module, test.support.interpreters over _xxsubinterpreters
        names = ["test.test_interpreters.TestInterpreterClose", "test.test_interpreters.StressTests"]
    else:
        names = [
            "test.test_interpreters.test_api.TestInterpreterClose",
            "test.test_interpreters.test_api.TestInterpreterCall",
            "test.test_interpreters.test_stress",
        ]
    try:
        suites = {"test_interpreters": loader.loadTestsFromNames(names)}
    except unittest.SkipTest:  # the whole package skips itself on free-threaded 3.13 ("GIL disabled")
        return {}
    if sys.version_info >= (3, 14):
        suites["interpreter_pool"] = loader.loadTestsFromName("test.test_concurrent_futures.test_interpreter_pool")
    return suites


def only(suite: unittest.TestSuite, wanted: set[str]) -> unittest.TestSuite:
    """The tests of `suite` whose id is in `wanted`, with their classes' and modules' fixtures as unittest runs
    them for any subset."""
    kept = unittest.TestSuite()
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            sub = only(test, wanted)
            if sub.countTestCases():
                kept.addTest(sub)
        elif test.id() in wanted:
            kept.addTest(test)
    return kept


def main() -> int:
    out_path = sys.argv[1]
    on_zthread = os.environ.get("ZTHREAD_CONFORMANCE") == "1"
    import _thread

    if on_zthread:
        import zthread

        assert _thread is zthread._zthread, "zthread was not installed as _thread"
        check_subinterpreters_swap_in()
    else:
        assert type(_thread).__name__ == "module" and "zthread" not in sys.modules

    from test import lock_tests, test_thread, test_threading, test_threading_local

    class LockTests(lock_tests.LockTests):
        locktype = staticmethod(_thread.allocate_lock)

    class RLockTests(lock_tests.RLockTests):
        locktype = staticmethod(_thread.RLock)

    loader = unittest.TestLoader()
    suites = {
        "test_thread": loader.loadTestsFromModule(test_thread),
        "lock_tests": unittest.TestSuite(
            [loader.loadTestsFromTestCase(LockTests), loader.loadTestsFromTestCase(RLockTests)]
        ),
        "test_threading": loader.loadTestsFromModule(test_threading),
        "test_threading_local": loader.loadTestsFromModule(test_threading_local),
    }
    suites.update(subinterpreter_suites(loader))
    if len(sys.argv) > 2:  # a JSON list of test ids: only those run (tools/conformance.py's re-runs)
        with open(sys.argv[2]) as f:
            wanted = set(json.load(f))
        suites = {name: only(suite, wanted) for name, suite in suites.items()}
    records: list[dict[str, str]] = []

    def save() -> None:
        with open(out_path, "w") as f:
            json.dump(records, f)

    class Recorder(unittest.TestResult):
        def startTest(self, test: unittest.TestCase) -> None:
            faulthandler.dump_traceback_later(PER_TEST_TIMEOUT_S, exit=True)
            print(f"  {suite_name}: {test.id()}", file=sys.stderr, flush=True)
            super().startTest(test)

        def stopTest(self, test: unittest.TestCase) -> None:
            faulthandler.cancel_dump_traceback_later()
            super().stopTest(test)

        def _add(self, test: unittest.TestCase, outcome: str, detail: str = "", case: str = "") -> None:
            # `case`: the test a subtest belongs to, the id that runs it again
            records.append({"suite": suite_name, "test": test.id(), "case": case or test.id(), "outcome": outcome,
                            "detail": detail[-2000:]})
            save()  # after every test: a run killed by the per-test timeout keeps what it has

        def addSuccess(self, test: unittest.TestCase) -> None:
            self._add(test, "pass")

        def addFailure(self, test: unittest.TestCase, err: object) -> None:
            self._add(test, "fail", self._exc_info_to_string(err, test))  # type: ignore[arg-type]

        def addError(self, test: unittest.TestCase, err: object) -> None:
            self._add(test, "fail", self._exc_info_to_string(err, test))  # type: ignore[arg-type]

        def addSkip(self, test: unittest.TestCase, reason: str) -> None:
            self._add(test, "skip", reason)

        def addExpectedFailure(self, test: unittest.TestCase, err: object) -> None:
            self._add(test, "pass", "expected failure")

        def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
            self._add(test, "fail", "unexpected success")

        def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase, err: object) -> None:
            if err is not None:
                self._add(subtest, "fail", self._exc_info_to_string(err, test), test.id())  # type: ignore[arg-type]

    save()
    for suite_name, suite in suites.items():
        suite.run(Recorder())
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
