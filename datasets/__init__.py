"""Data for bowlrp's tests and experiments. A folder of the repository, importable from its root;
deliberately not installed (a top-level ``datasets`` package would shadow the widely used library)."""
