"""``python -m bowlrp`` is the ``bowlrp`` command."""

from bowlrp.app.cli import main

raise SystemExit(main())
