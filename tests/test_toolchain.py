"""The checks beyond pytest, run from pytest so one command runs everything: the Zig core's own tests,
zig fmt, mypy --strict, stubtest against the installed binary, and abi3audit."""

from __future__ import annotations

import importlib.util
import math
import os
import runpy
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import zthread
import zthread._zthread

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = Path(zthread._zthread.__file__).resolve()
# Which ABI the installed binary is built for, by its file name (setup.py): abi3t on 3.15+, the free-threaded
# builds' own, or abi3. Its .def (zsrc/py/) lists what it may use.
ABI3T = ".abi3t." in INSTALLED.name
INSTALLED_DEF = "python3t" if ABI3T else "free_threaded" if FREE_THREADED else "python3"


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


def check(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


def not_installed_because(root: Path, package: Path, binary: Path) -> str | None:
    """Why the zthread in `package` (with its binary at `binary`) is not an installed one, or None. An installed
    package holds its binary and is not the checkout's source folder `zthread/`, wherever the venv is (the
    README's `.venv` is inside the checkout)."""
    if package == root / "zthread":
        return f"{package} is the source folder of the checkout {root}"
    if binary.parent != package or not binary.is_file():
        return f"{binary} is not the binary of {package}"
    return None


def test_tests_use_the_installed_package_not_the_source_folder() -> None:
    assert not_installed_because(ROOT, Path(zthread.__file__).resolve().parent, INSTALLED) is None


def test_the_installed_package_check_fails_on_the_source_folder(tmp_path: Path) -> None:
    # A checkout whose source folder has a binary (a build in place) and is imported from the checkout's root.
    root = tmp_path / "checkout"
    shutil.copytree(INSTALLED.parent, root / "zthread")
    proc = run(sys.executable, "-c", "import zthread; print(zthread.__file__); print(zthread._zthread.__file__)", cwd=root)
    check(proc)
    init, binary = (Path(line).resolve() for line in proc.stdout.split())
    package = init.parent
    assert package == root / "zthread"  # python -c imports from the current folder first
    assert not_installed_because(root, package, binary) is not None


def test_the_module_file_has_the_name_every_supported_cpython_imports() -> None:
    # A cp310-abi3 wheel must import on 3.10+, whichever interpreter built it (3.15's own first abi3 suffix,
    # ".abi3-x86_64-linux-gnu.so", is unknown to 3.10-3.14). The free-threaded build is for this interpreter.
    if sys.version_info >= (3, 15):  # abi3t, with or without the GIL
        assert INSTALLED.name == ("_zthread.pyd" if sys.platform == "win32" else "_zthread.abi3t.so")
    elif FREE_THREADED:
        assert INSTALLED.name == "_zthread" + sysconfig.get_config_var("EXT_SUFFIX")
    else:
        assert INSTALLED.name == ("_zthread.pyd" if sys.platform == "win32" else "_zthread.abi3.so")


def test_setup_py_refuses_an_unsupported_interpreter_in_one_line() -> None:
    # What `pip install .` shows a user of such an interpreter (pip prints the build's output): one line that
    # names the interpreter, not a traceback from setuptools. The interpreter is made to look like PyPy (every
    # CPython from 3.10 is supported, free-threaded from 3.13: there the ABIs are its own, then abi3t).
    pretend = ("sys.implementation = types.SimpleNamespace(**{**vars(sys.implementation), 'name': 'pypy'}); "
               "platform.python_implementation = lambda: 'PyPy'")
    code = f"import platform, runpy, sys, types; {pretend}; runpy.run_path('setup.py', run_name='__main__')"
    proc = run(sys.executable, "-c", code, cwd=ROOT)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and sys.executable in proc.stderr, proc.stderr
    assert "PyPy" in proc.stderr


def test_zig_core_tests_pass() -> None:
    check(run(sys.executable, "-m", "ziglang", "build", "test", "--summary", "all", cwd=ROOT))


def test_zig_sources_are_as_zig_fmt_writes_them() -> None:
    check(run(sys.executable, "-m", "ziglang", "fmt", "--check", "zsrc", "build.zig", cwd=ROOT))


# setup.py leaves mypy out of the test extra on a free-threaded 3.13 (no wheel there for its ast-serialize); the
# same sources and stub are checked on every build with the GIL.
needs_mypy = pytest.mark.skipif(importlib.util.find_spec("mypy") is None,
                                reason="mypy is not installable here (free-threaded 3.13: setup.py's test extra)")


@needs_mypy
def test_mypy_strict_passes_on_package_and_tests() -> None:
    check(run(sys.executable, "-m", "mypy", cwd=ROOT))


@needs_mypy
def test_stubtest_agrees_with_the_installed_module(tmp_path: Path) -> None:
    # From a temporary folder, so the stub checked is the one the wheel installed next to the binary.
    check(run(sys.executable, "-m", "mypy.stubtest", "zthread._zthread", cwd=tmp_path))


def test_the_wheel_ships_the_stub_from_stubs() -> None:
    shipped = INSTALLED.parent / "_zthread.pyi"
    source = ROOT / "stubs" / "zthread" / "_zthread.pyi"
    assert shipped.read_text() == source.read_text()
    assert (INSTALLED.parent / "py.typed").exists()


@pytest.mark.skipif(FREE_THREADED or ABI3T, reason="not an abi3 build (its symbols are checked against its .def)")
def test_abi3audit_finds_no_violation() -> None:
    abi3audit = Path(sys.executable).parent / "abi3audit"
    check(run(str(abi3audit), "--strict", "--assume-minimum-abi3", "3.10", str(INSTALLED), cwd=ROOT))


@pytest.mark.skipif(not FREE_THREADED, reason="a free-threaded build only")
def test_zthread_keeps_the_gil_off_on_a_free_threaded_build() -> None:
    # Without the Py_mod_gil slot the import would turn the GIL back on (with a RuntimeWarning).
    code = ("import sys, warnings; warnings.simplefilter('error'); import zthread; a = sys._is_gil_enabled(); "
            "zthread.install(); import threading; threading.Thread(target=int).start(); "
            "print(a, sys._is_gil_enabled())")
    # Not PYTHON_GIL from this run's environment: PYTHON_GIL=1 turns the GIL on whatever zthread declares.
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    proc = run(sys.executable, "-c", code, cwd=Path(zthread.__file__).parent.parent, env=env)
    check(proc)
    assert proc.stdout.split() == ["False", "False"]


def test_importing_zthread_does_not_import_threading() -> None:
    code = "import sys, zthread; print('threading' in sys.modules)"
    proc = run(sys.executable, "-c", code, cwd=Path(zthread.__file__).parent.parent)
    check(proc)
    assert proc.stdout.strip() == "False"


# Which of abi.zig's blocks of declarations each .def holds besides the top-level ones (abi.zig says why).
DEF_BLOCKS = {"python3": {"not_abi3t"}, "free_threaded": {"not_abi3t", "only_cp3xt", "no_gil"},
              "python3t": {"no_gil", "only_abi3t"}}


# free_threaded.def names no DLL: build.zig names python313t.dll or python314t.dll (dlltool -D), and
# tools/wheels.py verify checks what each Windows wheel's binary imports.
@pytest.mark.parametrize(("def_name", "dll"), [("python3", "python3.dll"), ("free_threaded", None),
                                               ("python3t", "python3t.dll")])
def test_each_def_lists_exactly_what_the_abi_file_declares_for_its_abi(def_name: str, dll: str | None) -> None:
    # Declarations at the top level of abi.zig are every ABI's; those inside a block (`pub const only_abi3t =
    # struct {`, indented, so the top-level pattern does not see them) belong to the .defs DEF_BLOCKS names.
    import re

    abi = (ROOT / "zsrc" / "py" / "abi.zig").read_text()
    declared = set(re.findall(r"^pub extern fn (\w+)\(", abi, re.M))
    declared_data = set(re.findall(r"^pub extern var (\w+):", abi, re.M))
    blocks = dict(re.findall(r"^pub const (\w+) = struct \{\n(.*?)^\};", abi, re.M | re.S))
    blocks = {name: body for name, body in blocks.items() if "pub extern" in body}
    assert set(blocks) == set().union(*DEF_BLOCKS.values()), sorted(blocks)
    for name in DEF_BLOCKS[def_name]:
        declared |= set(re.findall(r"^    pub extern fn (\w+)\(", blocks[name], re.M))
        declared_data |= set(re.findall(r"^    pub extern var (\w+):", blocks[name], re.M))
    lines = [line.strip() for line in (ROOT / "zsrc" / "py" / f"{def_name}.def").read_text().splitlines()]
    exports = lines[lines.index("EXPORTS") + 1 :]
    functions = {line for line in exports if line and not line.endswith(" DATA")}
    data = {line.removesuffix(" DATA") for line in exports if line.endswith(" DATA")}
    assert functions == declared
    assert data == declared_data
    assert [line for line in lines if line.startswith("LIBRARY")] == ([f"LIBRARY {dll}"] if dll else [])


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("nm") is None, reason="reads ELF with nm")
def test_the_installed_binary_uses_only_what_its_def_lists() -> None:
    # Every Python symbol the module imports is one abi.zig declares for its ABI (the .def).
    def_name = INSTALLED_DEF
    lines = (ROOT / "zsrc" / "py" / f"{def_name}.def").read_text().splitlines()
    listed = {line.strip().removesuffix(" DATA") for line in lines[lines.index("EXPORTS") + 1 :] if line.strip()}
    out = run("nm", "-D", "--undefined-only", str(INSTALLED), cwd=ROOT)
    check(out)
    used = {line.split()[-1] for line in out.stdout.splitlines() if line.split()[-1].startswith(("Py", "_Py"))}
    assert used and used <= listed, sorted(used - listed)


def test_no_other_file_declares_a_cpython_symbol() -> None:
    for path in (ROOT / "zsrc").rglob("*.zig"):
        if path.name == "abi.zig":
            continue
        text = path.read_text()
        assert "extern fn Py" not in text and "extern var Py" not in text, path


README_COMMANDS = runpy.run_path(str(ROOT / "tools" / "readme_commands.py"))


def test_ci_finds_the_readmes_two_commands_main_job_first() -> None:
    bench, tests = README_COMMANDS["commands"]((ROOT / "README.md").read_text())
    assert bench.startswith("python3 -m venv .venv && ") and bench.endswith(" -m zthread bench")
    assert tests.startswith("python3 -m venv .venv && ") and tests.endswith(".venv/bin/pytest")
    with pytest.raises(ValueError, match="should hold 2 commands"):
        README_COMMANDS["commands"]("# x\n```sh\n" + tests + "\n" + bench + "\n```\n")  # the wrong order


def test_ci_checks_that_the_main_job_printed_every_metric() -> None:
    from zthread._bench import METRICS, Result, table

    names = [m.name for m in METRICS]
    # as the bench prints them: with the rounds' own ratios (a column of their middle half)
    results = [Result(m.name, m.unit, 10.0, 5.0, (0.4, 0.5, 0.6) if m.both_sides else ()) for m in METRICS]
    assert README_COMMANDS["bench_problems"](table(results), names) == []
    assert README_COMMANDS["bench_problems"](table(results[1:]), names) == [f"no row for {names[0]}"]
    broken = [Result(r.metric, r.unit, r.cpython, math.nan if i == 2 else r.zthread, r.round_ratios)
              for i, r in enumerate(results)]
    assert len(README_COMMANDS["bench_problems"](table(broken), names)) == 1
    assert README_COMMANDS["bench_problems"]("Successfully installed zthread-0.1.0\n", names) != []
