"""A killed parallel run leaves no worker processes behind (SIGKILL or SIGTERM of the parent), with
the default worker pool (forked from a server process: the workers are grandchildren of the run)
and with joblib's loky."""

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


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        children = _children(todo.pop()) - found
        found |= children
        todo += children
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


# how the workers start: forked from the run's process (the default: one worker, the run's process
# being the other), from a fork server (when the run's process has other threads), joblib's loky;
# and the processes each leaves: the workers, plus the server and the resource tracker, or loky's
# resource tracker
POOLS = {"fork": 1, "server": 4, "loky": 3}


def _explain_command(pool, *args):
    """``bowlrp explain ARGS`` in a new interpreter, with the worker pool ``pool``."""
    if pool == "loky":
        return [sys.executable, "-m", "bowlrp.app.cli", "explain", *args, "--parallel-backend", "loky"]
    code = ("import sys; from bowlrp.app import process_pool, cli; "
            f"process_pool.FORK_DRIVER = {pool == 'fork'}; sys.exit(cli.main(sys.argv[1:]))")
    return [sys.executable, "-c", code, "explain", *args]


@pytest.mark.parametrize("sig, pool", [(signal.SIGKILL, "fork"), (signal.SIGTERM, "fork"),
                                       (signal.SIGKILL, "server"), (signal.SIGKILL, "loky")])
def test_workers_exit_within_10_s_of_their_parent(inputs, tmp_path, sig, pool):
    # 2,400 small images: a server's workers take a while to start (the parent explains chunks
    # itself until then), and the parent must not be able to finish the whole run before
    command = _explain_command(pool, inputs["net"], *[inputs["images"]] * 40, "-o", tmp_path / "out",
                               "-j", "2", "--chunk-size", "1", "--no-png", "-q")
    parent = subprocess.Popen([str(c) for c in command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wanted = POOLS[pool]
    try:
        deadline = time.monotonic() + 120
        workers = set()
        while len(workers) < wanted and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
            workers = _descendants(parent.pid)
        assert len(workers) >= wanted, \
            f"workers seen: {workers}; stderr: {parent.stderr.read().decode()[-2000:]}"
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
