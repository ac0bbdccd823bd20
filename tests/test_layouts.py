"""abi.zig's hand-written CPython layouts agree with this interpreter's own headers (tools/layouts.py; CI also
runs it for every ABI against every set of headers, cp314t included)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists(),
                    reason="this interpreter has no C headers")
def test_the_declared_layouts_match_this_interpreters_headers() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "layouts.py"), "--this"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok   "), proc.stdout
