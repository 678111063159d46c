"""The test harness itself (tests/conftest.py) under pytest-xdist: what the other tests rely on to run two at a time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).with_name("conftest.py")

PROBE = '''
import os, time, pytest

@pytest.fixture(autouse=True)
def envs_take_one_thread():
    """conftest's fixture of this name imports the world-model env (~5 s a worker); these probes make no env."""
    yield

def _record(name, seconds, log):
    start = time.time()
    time.sleep(seconds)
    with open(log, "a") as f:
        f.write(f"{name} {start} {time.time()} {os.getpid()}\\n")

@pytest.mark.parametrize("i", range(4))
def test_before(i):
    _record(f"before{i}", 0.4, os.environ["PROBE_LOG"])

@pytest.mark.alone
def test_alone():
    _record("alone", 0.8, os.environ["PROBE_LOG"])

@pytest.mark.parametrize("i", range(4))
def test_after(i):
    _record(f"after{i}", 0.4, os.environ["PROBE_LOG"])
'''


def test_an_alone_test_runs_while_no_other_worker_runs_one(tmp_path):
    """Two workers run the plain tests two at a time, and none while the ``alone`` test runs (the exclusive lock).
    Guards: the ``alone`` marker ignored (its test takes the shared lock like the others)."""
    (tmp_path / "conftest.py").write_text(f"exec(compile(open({str(CONFTEST)!r}).read(), {str(CONFTEST)!r}, 'exec'))\n")
    (tmp_path / "test_probe.py").write_text(PROBE)
    log = tmp_path / "log.txt"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "xdist", "-n", "2", "-p", "no:cacheprovider",
                           "--rootdir", str(tmp_path), str(tmp_path / "test_probe.py")], cwd=tmp_path,
                          env={**os.environ, "PROBE_LOG": str(log)}, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    runs = {name: (float(start), float(end), pid) for name, start, end, pid in
            (line.split() for line in log.read_text().splitlines())}
    assert len(runs) == 9 and len({pid for *_, pid in runs.values()}) == 2  # both workers ran tests
    start, end, _ = runs.pop("alone")
    overlapping = [name for name, (s, e, _) in runs.items() if s < end and e > start]
    assert not overlapping, f"ran beside the alone test: {overlapping}"
    spans = sorted(runs.values())
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), "the plain tests never ran two at a time"
