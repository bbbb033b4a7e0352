"""The bag-of-words model and its explanation (Bach et al. 2015, Sections 2-3 of the paper).

Forward, one module per stage: ``features`` (dense local descriptors) -> ``vocabulary`` (k-means
visual words) -> ``encoding`` (hard/rank/soft mapping, p-means pooling) -> ``kernels`` (the kernel
registry and Gram matrices) -> ``svm`` (one-vs-rest kernel SVMs) -> ``classifier`` (``BoWClassifier``,
the scikit-learn estimator that chains them). Backward: ``decompose/``, one module per step (score ->
BoW dimensions -> local features -> pixels) and an orchestrator using the classifier's public methods.
Depends only on the core (``bowlrp`` top level); never on ``nets`` or the application.
"""
