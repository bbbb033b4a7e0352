"""Suite-wide settings."""

import os
import pathlib

# scikit-learn's estimator checks include an array-API input check that runs only when scipy's
# array-API mode is on (it is read when scipy is first imported, so it is set here, before any test
# module imports scipy). With it on, the check runs instead of being skipped: CI skips nothing.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

_ahead = None  # the process compiling the session's kernels ahead (tests/compile_ahead.py)


def pytest_collection_finish(session):
    """On a cold numba cache, compile the kernels the selected tests call in a second process while
    the tests run; they load them from numba's disk cache (``BOWLRP_COMPILE_AHEAD=0`` turns it off)."""
    global _ahead
    if session.config.option.collectonly:
        return
    from tests import compile_ahead

    _ahead = compile_ahead.start(session.items, pathlib.Path(__file__).resolve().parent.parent)


def pytest_sessionfinish(session, exitstatus):
    """End the compile-ahead process (it stops between two cache saves); with CI=true a skipped test
    fails the run: CI must exercise everything the README promises."""
    if _ahead is not None:
        _ahead.stop()
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped and exitstatus == 0:
        reporter.write_line(f"CI=true: {len(skipped)} tests were skipped; CI may skip nothing", red=True)
        session.exitstatus = 1
