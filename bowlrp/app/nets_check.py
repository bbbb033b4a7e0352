"""Import the network package ``nets`` and make sure it is bowlrp's.

``nets`` is installed as a top-level package, and an unrelated package on PyPI (or a ``nets/``
folder or ``nets.py`` in the working directory) has the same name. Whichever comes first on
``sys.path`` wins, and the wrong one fails far from the cause (``no attribute 'LRP'``,
``'nets' is not a package``). Every place in ``bowlrp.app`` that needs the networks imports them
through :func:`import_nets`, which checks the marker our ``nets/__init__.py`` sets and otherwise
stops with a message that names the module actually imported.
"""

from __future__ import annotations

import importlib

__all__ = ["import_nets", "MARKER"]

# set in nets/__init__.py; a foreign package of the same name does not have it
MARKER = "__bowlrp_nets__"


def import_nets():
    """Return the ``nets`` module, after checking that it is bowlrp's network package.

    Raises
    ------
    ImportError
        ``nets`` is missing, or the ``nets`` that Python found is another package of the same name
        (the message says where it was found and what to do).
    """
    try:
        nets = importlib.import_module("nets")
    except ModuleNotFoundError as exc:
        if exc.name != "nets":
            raise
        raise ImportError("bowlrp's network package 'nets' is not installed; reinstall bowlrp "
                          "(pip install bowlrp, or pip install -e . in a checkout)") from exc
    if getattr(nets, MARKER, False) is not True:
        where = getattr(nets, "__file__", None) or list(getattr(nets, "__path__", [])) or "an unknown place"
        raise ImportError(
            f"'import nets' found {where}, which is not bowlrp's network package: another package or "
            "folder named 'nets' (for example the unrelated 'nets' on PyPI, or a nets/ folder in the "
            "current directory) shadows it. Uninstall or rename the other one (pip uninstall nets; then "
            "reinstall bowlrp), or run from a directory that holds no 'nets'.")
    return nets
