"""The checks beyond pytest, run from pytest so one command runs everything: the Zig core's own tests,
zig fmt, mypy --strict, stubtest against the installed binary, and abi3audit."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import zthread
import zthread._zthread

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = Path(zthread._zthread.__file__).resolve()


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900)


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
    # ".abi3-x86_64-linux-gnu.so", is unknown to 3.10-3.14).
    assert INSTALLED.name == ("_zthread.pyd" if sys.platform == "win32" else "_zthread.abi3.so")


def test_zig_core_tests_pass() -> None:
    check(run(sys.executable, "-m", "ziglang", "build", "test", "--summary", "all", cwd=ROOT))


def test_zig_sources_are_as_zig_fmt_writes_them() -> None:
    check(run(sys.executable, "-m", "ziglang", "fmt", "--check", "zsrc", "build.zig", cwd=ROOT))


def test_mypy_strict_passes_on_package_and_tests() -> None:
    check(run(sys.executable, "-m", "mypy", cwd=ROOT))


def test_stubtest_agrees_with_the_installed_module(tmp_path: Path) -> None:
    # From a temporary folder, so the stub checked is the one the wheel installed next to the binary.
    check(run(sys.executable, "-m", "mypy.stubtest", "zthread._zthread", cwd=tmp_path))


def test_the_wheel_ships_the_stub_from_stubs() -> None:
    shipped = INSTALLED.parent / "_zthread.pyi"
    source = ROOT / "stubs" / "zthread" / "_zthread.pyi"
    assert shipped.read_text() == source.read_text()
    assert (INSTALLED.parent / "py.typed").exists()


def test_abi3audit_finds_no_violation() -> None:
    abi3audit = Path(sys.executable).parent / "abi3audit"
    check(run(str(abi3audit), "--strict", "--assume-minimum-abi3", "3.10", str(INSTALLED), cwd=ROOT))


def test_importing_zthread_does_not_import_threading() -> None:
    code = "import sys, zthread; print('threading' in sys.modules)"
    proc = run(sys.executable, "-c", code, cwd=Path(zthread.__file__).parent.parent)
    check(proc)
    assert proc.stdout.strip() == "False"


def test_python3_def_lists_exactly_what_the_abi_file_declares() -> None:
    import re

    abi = (ROOT / "zsrc" / "py" / "abi.zig").read_text()
    declared = set(re.findall(r"^pub extern fn (\w+)\(", abi, re.M))
    declared_data = set(re.findall(r"^pub extern var (\w+):", abi, re.M))
    lines = [line.strip() for line in (ROOT / "zsrc" / "py" / "python3.def").read_text().splitlines()]
    exports = lines[lines.index("EXPORTS") + 1 :]
    functions = {line for line in exports if line and not line.endswith(" DATA")}
    data = {line.removesuffix(" DATA") for line in exports if line.endswith(" DATA")}
    assert functions == declared
    assert data == declared_data
    assert "LIBRARY python3.dll" in lines


def test_no_other_file_declares_a_cpython_symbol() -> None:
    for path in (ROOT / "zsrc").rglob("*.zig"):
        if path.name == "abi.zig":
            continue
        text = path.read_text()
        assert "extern fn Py" not in text and "extern var Py" not in text, path
