"""Convert fitted scikit-learn multilayer perceptrons into :class:`nets.Sequential` models.

scikit-learn computes ``a_{k+1} = act(a_k @ coefs_[k] + intercepts_[k])`` with ``coefs_[k]`` of
shape (in, out); ``nets.Dense`` takes W as (out, in), so each weight matrix is transposed. The last
layer is left without its output activation: the model returns the scores that the softmax
(multi-class), the logistic function (binary and multi-label) or the identity (regression) turns
into scikit-learn's outputs, because LRP explains scores, not probabilities.
"""

from __future__ import annotations

import numpy as np

__all__ = ["from_sklearn"]

_ACTIVATIONS = {"identity": None, "relu": "ReLU", "tanh": "Tanh", "logistic": "Sigmoid"}


def from_sklearn(estimator, dtype=np.float64):
    """Build a :class:`nets.Sequential` from a fitted ``MLPClassifier`` or ``MLPRegressor``.

    Parameters
    ----------
    estimator : sklearn.neural_network.MLPClassifier or MLPRegressor
        Fitted, with any hidden ``activation`` ("identity", "logistic", "tanh", "relu").
    dtype : numpy dtype, default=np.float64
        Dtype of the weights of the returned model.

    Returns
    -------
    model : nets.Sequential
        ``Dense`` and activation layers; its output is the pre-activation of scikit-learn's
        output layer: ``(n, n_classes)`` logits for multi-class, ``(n, 1)`` logit of
        ``classes_[1]`` for binary classifiers, ``(n, n_labels)`` logits for multi-label, and
        ``(n, n_outputs)`` predictions for regressors (identity output).

    Examples
    --------
    >>> import numpy as np, nets
    >>> from sklearn.neural_network import MLPClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(60, 4)); y = (X[:, 0] > 0).astype(int)
    >>> clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=300, random_state=0).fit(X, y)
    >>> model = nets.from_sklearn(clf)
    >>> logit = model(X)[:, 0]
    >>> np.allclose(1 / (1 + np.exp(-logit)), clf.predict_proba(X)[:, 1])
    True
    """
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.utils.validation import check_is_fitted

    from . import layers as L
    from .model import Sequential

    if not isinstance(estimator, (MLPClassifier, MLPRegressor)):
        raise TypeError(
            f"from_sklearn supports MLPClassifier and MLPRegressor, got {type(estimator).__name__}"
        )
    check_is_fitted(estimator, ["coefs_", "intercepts_"])
    activation = estimator.activation
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unsupported hidden activation {activation!r}; known: {sorted(_ACTIVATIONS)}")
    dtype = np.dtype(dtype)
    layers, names = [], []
    n_layers = len(estimator.coefs_)
    for k, (coef, intercept) in enumerate(zip(estimator.coefs_, estimator.intercepts_)):
        W = np.ascontiguousarray(np.asarray(coef).T, dtype=dtype)
        b = np.asarray(intercept, dtype=dtype)
        layers.append(L.Dense(W, b))
        names.append(f"dense_{k}")
        if k < n_layers - 1 and _ACTIVATIONS[activation] is not None:
            layers.append(getattr(L, _ACTIVATIONS[activation])())
            names.append(f"{activation}_{k}")
    return Sequential(layers, names=names)
