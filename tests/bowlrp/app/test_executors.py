"""A killed parallel run leaves no worker processes behind (SIGKILL or SIGTERM of the parent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.bowlrp.app import cli_data

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads the process table from /proc")


def _children(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("killed")
    cli_data.write_digits(root / "images", 60)
    return {"net": cli_data.digits_network(str(root / "digits.npz")), "images": str(root / "images")}


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_exit_within_10_s_of_their_parent(inputs, tmp_path, sig):
    command = [sys.executable, "-m", "bowlrp.app.cli", "explain", inputs["net"], *[inputs["images"]] * 8,
               "-o", tmp_path / "out", "-j", "2", "--chunk-size", "1", "--no-png", "-q"]
    parent = subprocess.Popen([str(c) for c in command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        workers = set()
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
            # the loky workers (the resource tracker is a child too: it must go as well)
            workers = _children(parent.pid)
        assert len(workers) >= 2, f"no workers seen; stderr: {parent.stderr.read().decode()[-2000:]}"
        time.sleep(1.0)  # the workers are busy explaining
        os.kill(parent.pid, sig)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        left = [p for p in workers if _alive(p)]
        assert not left, f"processes {left} outlived their parent by 10 s"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
