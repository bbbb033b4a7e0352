"""Subprocesses that a test interrupts with SIGINT (Ctrl-C).

A shell without job control starts a background command (``make test &`` in a script, ``nohup``) with
SIGINT ignored, every process below inherits that, and a Python started so never raises
KeyboardInterrupt: the tests of what Ctrl-C does would fail there for no fault of the code.
"""

from __future__ import annotations

import signal


def default_sigint():
    """``preexec_fn`` of a subprocess a test interrupts: SIGINT's default action back before the
    program starts (Python then installs its KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
