"""The application layer: everything a user runs, on top of both branches.

``cli`` (the ``bowlrp`` command: parser in ``cli``, subcommands in ``cli_commands``, shared
helpers in ``cli_common``, training-set preparation in ``cli_training``), ``batch`` and ``runs``
(streaming, resumable explanation runs and their evaluation), ``report`` (HTML pages), ``persist``
(saving and loading models), ``adapters`` (``BoWExplainer`` and ``NetworkExplainer``: the
:class:`bowlrp.explainer.Explainer` protocol for a BoW model and for a ``nets`` network), ``demo``
and ``scenes`` (the demo's scene generator). The only layer that imports both ``bowlrp.bow`` and
``nets``; nothing below imports it.
"""
