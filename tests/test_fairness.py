"""Fairness: threads that contend for one threading.Lock on zthread all make progress.

No timing is asserted (the bench measures the longest wait and the rate: `python -m zthread bench --apps
--only fairness`); only what holds on any machine: in a second of short critical sections taken back to
back by 4 threads, each thread gets the lock many times. A lock that lets its releaser barge forever would
leave the others at a handful of acquisitions per switch interval.
"""

from __future__ import annotations

import json
import subprocess
import sys

CODE = """
import json, sys, zthread
zthread.install()
import threading
from zthread._apps import fairness_counts
print(json.dumps(fairness_counts(threading, float(sys.argv[1]), int(sys.argv[2]))))
"""


def fairness(duration_s: float, threads: int) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-I", "-c", CODE, str(duration_s), str(threads)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


def test_every_thread_makes_progress_on_one_contended_lock() -> None:
    doc = fairness(1.0, 4)
    counts = doc["counts"]
    assert isinstance(counts, list) and len(counts) == 4
    # Under the GIL a thread runs for a 5 ms switch interval at a time: in 1 s each of 4 threads gets many
    # turns if none starves. 20 acquisitions is far below any fair share on any machine.
    assert min(counts) >= 20, counts


def test_more_threads_than_cpus_all_make_progress() -> None:
    doc = fairness(0.5, 8)
    counts = doc["counts"]
    assert isinstance(counts, list) and min(counts) >= 10, counts
