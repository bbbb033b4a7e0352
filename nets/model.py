"""``Sequential``: a feed-forward network as an ordered list of named layers.

The model is a callable from inputs to logits. ``trace`` runs the same forward pass but keeps every
intermediate activation, which is what the relevance and gradient passes walk back through; so the
explanation reuses exactly the numbers the prediction computed.
"""

from __future__ import annotations

import numpy as np

from nets.layers import Layer

__all__ = ["Sequential", "check_batch"]


def check_batch(X, name="X"):
    """Validate a batch of inputs: numeric, finite, at least 2-D; float32 kept, else float64."""
    X = np.asarray(X)
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise TypeError(f"{name} must be a numeric array, got dtype {X.dtype}")
    if np.issubdtype(X.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {X.dtype}")
    X = X.astype(np.float32 if X.dtype == np.float32 else np.float64, copy=False)
    if X.ndim < 2:
        raise ValueError(f"{name} must be a batch (N, ...) with at least 2 dimensions, got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return X


class Sequential:
    """A feed-forward network: ``layers`` applied in order.

    Parameters
    ----------
    layers : list of nets layers
    names : list of str, optional
        One unique name per layer (used by name-based composites); default ``"<kind>_<index>"``,
        e.g. ``"dense_0"``.

    Examples
    --------
    >>> import numpy as np
    >>> import nets
    >>> rng = np.random.default_rng(0)
    >>> model = nets.Sequential([nets.Dense(rng.normal(size=(4, 3))), nets.ReLU(),
    ...                          nets.Dense(rng.normal(size=(2, 4)))])
    >>> model(rng.normal(size=(5, 3))).shape
    (5, 2)
    >>> model.names
    ['dense_0', 'relu_1', 'dense_2']
    """

    def __init__(self, layers, names=None):
        layers = list(layers)
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is {type(layer).__name__}, not a nets layer")
        if names is None:
            names = [f"{layer.kind.lower()}_{i}" for i, layer in enumerate(layers)]
        names = [str(n) for n in names]
        if len(names) != len(layers):
            raise ValueError(f"got {len(names)} names for {len(layers)} layers")
        if len(set(names)) != len(names):
            raise ValueError("layer names must be unique")
        self.layers = layers
        self.names = names

    def __len__(self):
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __getitem__(self, key):
        if isinstance(key, str):
            try:
                return self.layers[self.names.index(key)]
            except ValueError:
                raise KeyError(f"no layer named {key!r}") from None
        return self.layers[key]

    def __repr__(self):
        body = "\n".join(f"  ({n}): {layer!r}" for n, layer in zip(self.names, self.layers))
        return f"Sequential(\n{body}\n)"

    @property
    def dtype(self):
        """float32 when every parameter is float32 (or there are none), float64 otherwise."""
        dtypes = {a.dtype for layer in self.layers for a in layer.get_arrays().values()}
        return np.dtype(np.float32) if dtypes <= {np.dtype(np.float32)} and dtypes else np.dtype(np.float64)

    def forward(self, X):
        """Logits (or whatever the last layer computes) for the batch ``X``."""
        return self.trace(X)[-1]

    __call__ = forward

    def trace(self, X):
        """Every activation of the forward pass: ``[X, layer_0(X), layer_1(layer_0(X)), ...]``."""
        a = check_batch(X)
        acts = [a]
        for name, layer in zip(self.names, self.layers):
            try:
                a = layer.forward(a)
            except ValueError as err:
                raise ValueError(f"layer {name!r}: {err}") from None
            acts.append(a)
        return acts

    def predict(self, X):
        """Index of the largest output per sample."""
        return np.argmax(self.forward(X), axis=1)

    def gradient(self, X, grad_output, activations=None):
        """Gradient of ``sum(grad_output * model(X))`` with respect to ``X`` (a vector-Jacobian
        product through every layer); ``activations`` from ``trace`` can be passed to reuse them."""
        acts = self.trace(X) if activations is None else activations
        g = np.asarray(grad_output, dtype=acts[-1].dtype)
        if g.shape != acts[-1].shape:
            raise ValueError(f"grad_output has shape {g.shape}, the output has shape {acts[-1].shape}")
        for i in range(len(self.layers) - 1, -1, -1):
            g = self.layers[i].backward(acts[i], acts[i + 1], g)
        return g

    def astype(self, dtype):
        """A copy of the model with every parameter cast to ``dtype`` (float32 or float64)."""
        return Sequential([layer.astype(dtype) for layer in self.layers], list(self.names))

    def get_config(self):
        """Layer kinds, names and configs (JSON-serialisable); arrays come from ``get_arrays``."""
        return {
            "layers": [
                {"kind": layer.kind, "name": name, "config": layer.get_config()}
                for name, layer in zip(self.names, self.layers)
            ]
        }

    def save(self, path):
        """Write the model to ``path`` (see ``nets.io.save_model``)."""
        from nets.io import save_model

        return save_model(self, path)
