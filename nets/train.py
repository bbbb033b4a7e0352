"""Train small ``nets.Sequential`` classifiers (convolutional or dense) with minibatch Adam.

``ConvNetClassifier`` is a scikit-learn-style estimator whose fitted ``model_`` is an ordinary
``nets.Sequential`` producing one logit per class, so it can be saved, imported back and explained
with ``nets.LRP`` like any other model.

What the trainer reuses and what it adds:

* the forward pass is each layer's own ``forward`` and the gradient with respect to a layer's input
  is each layer's own ``backward`` (the vector-Jacobian products ``Sequential.gradient`` walks);
* the only new derivatives are those with respect to the parameters of ``Dense`` (one GEMM) and
  ``Conv2D`` (the layer's numba ``im2col`` followed by one GEMM per batch chunk), written in
  :mod:`nets._backprop` with the loss and the Adam update, because nothing else needs them;
* ``Dropout`` is active while training (inverted dropout: kept units are scaled by ``1/(1-p)``), an
  identity in the fitted model.

Loss: softmax cross-entropy over one output per class (also for two classes: the binary decision
function is the logit difference ``z_1 - z_0``), averaged over the batch, plus
``alpha / 2 * sum ||W||^2`` over the weight arrays (not the biases). Parameters are initialised with
He-normal weights (``std = sqrt(2 / fan_in)``; ``sqrt(1 / fan_in)`` for the output layer) and zero
biases, from ``random_state``, which also drives the minibatch order, dropout and the validation
split, so two fits with the same ``random_state`` give identical models.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from bowlrp.jit import limited_threads
from nets._backprop import Adam, loss_and_grads
from nets.architectures import ARCHITECTURES, TRAINABLE_LAYERS, build_model  # noqa: F401 (re-exported)
from nets.layers import Conv2D, Dense, Flatten
from nets.model import Sequential, check_batch

__all__ = ["ConvNetClassifier", "ARCHITECTURES", "build_model", "loss_and_grads"]


def _copy_model(model, dtype):
    return Sequential([layer.astype(dtype) for layer in model.layers], list(model.names))


def _limit_threads(n_threads):
    """Run the numba kernels and BLAS with ``n_threads`` threads (None: leave the settings alone).

    On a busy machine one thread is several times faster for these small batches: every parallel
    region (an im2col, a GEMM) waits for all of its threads to be scheduled.
    """
    return limited_threads(n_threads)


def _first_linear(model):
    """Index of the first Dense/Conv2D layer when only Flatten layers precede it, else None."""
    for i, layer in enumerate(model.layers):
        if isinstance(layer, (Dense, Conv2D)):
            return i
        if not isinstance(layer, Flatten):
            return None
    return None


def _foldable(model):
    """True when an input standardisation folds exactly into the first layer's parameters: a Dense
    layer, or a Conv2D without padding (zero padding of standardised input would be padding with
    the mean of the raw input, which no weight change can reproduce)."""
    i = _first_linear(model)
    if i is None:
        return False
    layer = model.layers[i]
    return isinstance(layer, Dense) or tuple(layer.padding) == (0, 0)


def _fold_standardization(model, mean, scale, input_shape):
    """A copy of ``model`` that computes ``model((x - mean[c]) / scale)`` from raw input ``x``."""
    model = _copy_model(model, np.float64)
    i = _first_linear(model)
    layer = model.layers[i]
    W = layer.W / scale
    b = np.zeros(layer.W.shape[0]) if layer.b is None else layer.b.copy()
    if isinstance(layer, Conv2D):
        b -= np.einsum("ocij,c->o", W, mean)
        new = Conv2D(W, b, layer.stride, layer.padding)
    else:  # Dense after Flatten: input feature f of an image belongs to channel f // (H * W)
        mean_vec = np.repeat(mean, int(np.prod(input_shape[1:])))
        b -= W @ mean_vec
        new = Dense(W, b)
    layers = list(model.layers)
    layers[i] = new
    return Sequential(layers, list(model.names))


def _flip_augment(Xb, rng):
    """Each image randomly flipped vertically, horizontally and (square images) transposed: the
    eight symmetries of the square, which leave a 'polygon or circle' label unchanged."""
    out = Xb.copy()
    flags = rng.random((len(Xb), 3)) < 0.5
    for k, (fv, fh, tr) in enumerate(flags):
        img = out[k]
        if fv:
            img = img[:, ::-1]
        if fh:
            img = img[:, :, ::-1]
        if tr and img.shape[1] == img.shape[2]:
            img = img.transpose(0, 2, 1)
        out[k] = img
    return out


def _as_images(X, name="X"):
    X = check_batch(X, name)
    if X.ndim == 3:
        X = X[:, None]
    if X.ndim != 4:
        raise ValueError(f"{name} must have shape (n, H, W) or (n, C, H, W), got shape {X.shape}")
    return X


# --------------------------------------------------------------------------------------------------
class ConvNetClassifier(ClassifierMixin, BaseEstimator):
    """A small convolutional (or dense) network classifier trained with minibatch Adam.

    Parameters
    ----------
    architecture : str or list of layer specs, default "small_cnn"
        ``"small_cnn"`` (conv 5x5x8, ReLU, max pool 2, conv 5x5x16, ReLU, max pool 2, conv 3x3x16,
        ReLU, global max pool, dense), ``"mlp"`` or a list of specs (see ``build_model``); the
        output layer (one logit per class) is appended. A ``nets.Sequential`` made of supported
        layers (Dense, Conv2D, ReLU, LeakyReLU, Tanh, MaxPool2D, AvgPool2D, GlobalAvgPool2D,
        Flatten, Dropout) with one output per class is also accepted; it is copied and its weights
        are the starting point.
    epochs : int, default 20
        Passes over the training data (the maximum, with early stopping).
    batch_size : int, default 32
    learning_rate : float, default 3e-3
        Adam step size.
    alpha : float, default 0.0
        L2 penalty ``alpha / 2 * sum ||W||^2`` on the weights (not the biases), added to the
        mean batch loss.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the training data (stratified), score it after every
        epoch, stop after ``n_iter_no_change`` epochs without improvement and keep the best weights.
    validation_fraction : float, default 0.1
    n_iter_no_change : int, default 5
    standardize : bool, default True
        Train on ``(x - mean_c) / scale`` (per-channel means and one overall standard deviation of
        the training images) and fold that map exactly into the first layer at the end, so
        ``model_`` still takes raw images. Needs a first Dense layer or an unpadded Conv2D
        (ValueError otherwise); not applied when ``architecture`` is a ``nets.Sequential``.
    augment : {None, "flips"}, default None
        ``"flips"``: every training image of every minibatch is randomly flipped vertically,
        horizontally and (square images) transposed. Only for labels that these symmetries keep
        (shapes, textures), not for digits or letters.
    n_threads : int or None, default 1
        Threads of the numba kernels and BLAS while fitting and predicting. One thread is much
        faster on a shared machine for batches this small; None leaves the global settings.
    dtype : {"float32", "float64"}, default "float32"
        Precision of the training arithmetic (float32 is about twice as fast). The fitted
        ``model_`` is always float64, so explanations are computed in double precision.
    random_state : int or None
        Seeds the initial weights, the minibatch order, dropout and the validation split.
    verbose : bool, default False
        Print one line per epoch (mean training loss, validation accuracy, elapsed time).

    Attributes
    ----------
    classes_ : ndarray
        The class labels; output ``k`` of ``model_`` scores ``classes_[k]``.
    model_ : nets.Sequential
        The trained network (float64), from (n, C, H, W) images to (n, n_classes) logits.
    input_shape_ : tuple
        ``(C, H, W)`` of the training images.
    input_mean_ : ndarray of shape (C,)
        Per-channel mean of the training images (zeros without standardisation).
    input_scale_ : float
        Their standard deviation (1.0 without standardisation).
    loss_curve_ : list of float
        Mean training loss of every epoch.
    validation_scores_ : list of float
        Validation accuracy per epoch (empty without early stopping).
    n_epochs_ : int
        Epochs run.
    fit_time_ : float
        Seconds spent in ``fit``.

    Examples
    --------
    >>> import numpy as np
    >>> from nets.train import ConvNetClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((40, 8, 8)); X[:20, 2:6, 2:6] += 1.0   # a bright square in class 0
    >>> y = np.array([0] * 20 + [1] * 20)
    >>> clf = ConvNetClassifier([("conv", 4, 3), "relu", "global_maxpool"], epochs=30,
    ...                         random_state=0).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
    >>> clf.model_(X[:, None]).shape
    (40, 2)
    """

    def __init__(
        self,
        architecture="small_cnn",
        epochs=20,
        batch_size=32,
        learning_rate=3e-3,
        alpha=0.0,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        standardize=True,
        augment=None,
        n_threads=1,
        dtype="float32",
        random_state=None,
        verbose=False,
    ):
        self.architecture = architecture
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.standardize = standardize
        self.augment = augment
        self.n_threads = n_threads
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ validation
    def _check_params(self):
        if int(self.epochs) < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not float(self.learning_rate) > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not float(self.alpha) >= 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        if self.early_stopping and not 0 < float(self.validation_fraction) < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.augment not in (None, "flips"):
            raise ValueError(f"augment must be None or 'flips', got {self.augment!r}")
        if self.n_threads is not None and int(self.n_threads) < 1:
            raise ValueError(f"n_threads must be >= 1 or None, got {self.n_threads}")
        dtype = np.dtype(self.dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        return dtype

    def _initial_model(self, input_shape, n_classes, rng, dtype):
        if isinstance(self.architecture, Sequential):
            for name, layer in zip(self.architecture.names, self.architecture.layers):
                if not isinstance(layer, TRAINABLE_LAYERS):
                    raise ValueError(
                        f"layer {name!r} ({layer.kind}) is not supported by the trainer; supported: "
                        f"{sorted(cls.kind for cls in TRAINABLE_LAYERS)}"
                    )
            model = _copy_model(self.architecture, dtype)
            try:
                out = model(np.zeros((1, *input_shape), dtype=dtype))
            except ValueError as err:
                raise ValueError(f"architecture does not fit input shape {input_shape}: {err}") from None
            if out.shape != (1, n_classes):
                raise ValueError(f"the model has {out.shape[1:]} outputs, the data {n_classes} classes")
            return model
        return build_model(self.architecture, input_shape, n_classes, rng, dtype)

    def _validate_X(self, X):
        check_is_fitted(self, "model_")
        X = _as_images(X)
        if X.shape[1:] != self.input_shape_:
            raise ValueError(
                f"X has per-sample shape {X.shape[1:]}, the model was fitted on {self.input_shape_}"
            )
        return X

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y):
        """Train on images ``X`` ((n, H, W) or (n, C, H, W)) with labels ``y``; returns self."""
        with _limit_threads(self.n_threads):
            return self._fit(X, y)

    def _fit(self, X, y):
        t0 = time.perf_counter()
        dtype = self._check_params()
        X = _as_images(X)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(X):
            raise ValueError(f"y must be 1-D with one label per image: X has {len(X)}, y has shape {y.shape}")
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"y has a single class ({self.classes_[0]!r}); need at least two")
        rng = np.random.default_rng(self.random_state)
        self.input_shape_ = tuple(X.shape[1:])
        model = self._initial_model(self.input_shape_, len(self.classes_), rng, dtype)
        standardize = bool(self.standardize) and not isinstance(self.architecture, Sequential)
        if standardize and not _foldable(model):
            raise ValueError(
                "standardize=True needs a first Dense layer or a Conv2D without padding (so the "
                "standardisation folds exactly into it); change the first layer or set standardize=False"
            )
        self.input_mean_ = X.mean(axis=(0, 2, 3)) if standardize else np.zeros(X.shape[1])
        self.input_scale_ = float(X.std()) if standardize else 1.0
        if not self.input_scale_ > 0:
            raise ValueError("X is constant: nothing to learn from")

        train_idx, val_idx = np.arange(len(X)), np.empty(0, dtype=np.intp)
        if self.early_stopping:
            train_idx, val_idx = self._split(y_idx, rng)
        Xt = ((X - self.input_mean_.reshape(1, -1, 1, 1)) / self.input_scale_).astype(dtype, copy=False)
        adam = Adam(model, float(self.learning_rate))
        batch, alpha = int(self.batch_size), float(self.alpha)
        self.loss_curve_, self.validation_scores_ = [], []
        best, best_score, stale = None, -np.inf, 0
        for epoch in range(int(self.epochs)):
            order = train_idx[rng.permutation(len(train_idx))]
            total = 0.0
            for s in range(0, len(order), batch):
                idx = np.sort(order[s : s + batch])
                Xb = _flip_augment(Xt[idx], rng) if self.augment == "flips" else Xt[idx]
                loss, grads = loss_and_grads(model, Xb, y_idx[idx], alpha, rng, training=True)
                if not np.isfinite(loss):
                    raise FloatingPointError(
                        f"training diverged at epoch {epoch + 1} (loss {loss}); lower learning_rate"
                    )
                adam.step(model, grads)
                total += loss * len(idx)
            self.loss_curve_.append(total / len(order))
            msg = f"epoch {epoch + 1:3d}  loss {self.loss_curve_[-1]:.4f}"
            if len(val_idx):
                score = float(np.mean(model(Xt[val_idx]).argmax(axis=1) == y_idx[val_idx]))
                self.validation_scores_.append(score)
                msg += f"  val acc {score:.3f}"
                if score > best_score:
                    best, best_score, stale = _copy_model(model, dtype), score, 0
                else:
                    stale += 1
            if self.verbose:
                print(f"{msg}  ({time.perf_counter() - t0:.1f} s)", flush=True)
            if len(val_idx) and stale >= int(self.n_iter_no_change):
                break
        self.n_epochs_ = epoch + 1
        if best is not None:
            model = best
        if standardize:
            self.model_ = _fold_standardization(model, self.input_mean_, self.input_scale_, self.input_shape_)
        else:
            self.model_ = model.astype(np.float64)
        self.fit_time_ = time.perf_counter() - t0
        return self

    def _split(self, y_idx, rng):
        """Stratified train/validation index split (at least one validation sample per class)."""
        train, val = [], []
        for k in np.unique(y_idx):
            members = np.flatnonzero(y_idx == k)
            members = members[rng.permutation(len(members))]
            n_val = max(1, int(round(float(self.validation_fraction) * len(members))))
            if n_val >= len(members):
                raise ValueError(f"class {self.classes_[k]!r} has too few samples for a validation split")
            val.append(members[:n_val])
            train.append(members[n_val:])
        return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))

    # ------------------------------------------------------------------ prediction
    def _logits(self, X):
        X = self._validate_X(X)
        with _limit_threads(self.n_threads):
            return self.model_(X)

    def decision_function(self, X):
        """Logits (n, n_classes); for two classes the (n,) margin ``z_1 - z_0``."""
        z = self._logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def decision_model(self):
        """A ``nets.Sequential`` that computes :meth:`decision_function` (as an (n, 1) output for two
        classes), for explaining the decision itself.

        For two classes the last layer's two rows are replaced by their difference, so the single
        output is the margin ``z_1 - z_0`` exactly (the last layer is linear); explaining it tells what
        speaks for ``classes_[1]`` rather than against ``classes_[0]``, as for a binary SVM. With more
        classes it is ``model_`` itself.
        """
        check_is_fitted(self, "model_")
        if len(self.classes_) != 2:
            return self.model_
        *body, last = self.model_.layers
        W = last.W[1:2] - last.W[0:1]
        b = None if last.b is None else last.b[1:2] - last.b[0:1]
        return Sequential([*body, Dense(W, b)], names=list(self.model_.names))

    def predict_proba(self, X):
        """Softmax of the logits, (n, n_classes)."""
        z = self._logits(X)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        """The class of the largest logit."""
        z = self._logits(X)
        return self.classes_[np.argmax(z, axis=1)]
