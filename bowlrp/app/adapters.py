"""The two implementations of :class:`bowlrp.explainer.Explainer`: a BoW/SVM pipeline and a network.

A BoW/SVM pipeline explains raw images of any size; a network needs its inputs shaped, scaled and
laid out as NCHW. The adapters here hide that difference behind the protocol's methods:

``prepare(images)``
    images as read from disk -> the images the model actually sees (a network's are resized and
    scaled to [0, 1]); heatmaps are drawn on, and evaluations perturb, these.
``explain(images, target=None)``
    -> list of :class:`~bowlrp.heatmap.Heatmap` (each with its prepared image attached).
``decision(prepared)``
    -> (n, n_outputs) scores of prepared images.
``score_function(target)``
    -> a callable prepared images -> the explained score f(x) of ``target`` (the number a
    heatmap's ``score`` holds), for perturbation curves.

The adapters are plain picklable objects, so joblib and dask can ship them to workers.
"""

from __future__ import annotations

import numpy as np

from bowlrp.explainer import Explainer
from bowlrp.validation import to_grey

__all__ = ["BoWExplainer", "NetworkExplainer", "as_explainer", "parse_target", "network_types",
           "network_classifier", "prepare_images", "to_nchw"]


def network_types() -> tuple:
    """The ``nets`` model classes an adapter accepts (for ``isinstance``): ``nets.Graph``, of which
    ``Sequential`` (a chain) is one kind. The one place to extend."""
    from nets.graph import Graph

    return (Graph,)


def realign(obj, _seen=None):
    """Replace unaligned numpy arrays inside ``obj`` (attributes, dicts, lists) by aligned copies.

    dask deserialises arrays as views into the received network frames, at arbitrary byte
    offsets. numpy hands only aligned arrays to BLAS and computes unaligned products with its own
    loop, whose rounding differs in the last bit; a model used as received would then explain
    slightly differently on a worker than locally. Returns ``obj`` (modified in place).
    """
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return obj
    seen.add(id(obj))

    def fixed(value):
        if isinstance(value, np.ndarray) and value.dtype != object and not (
                value.flags.aligned and value.flags.c_contiguous):
            return np.array(value, copy=True, order="C")
        realign(value, seen)
        return value

    if isinstance(obj, dict):
        for key, value in obj.items():
            obj[key] = fixed(value)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            obj[i] = fixed(value)
    elif isinstance(obj, tuple):
        for value in obj:
            realign(value, seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        for key, value in vars(obj).items():
            new = fixed(value)
            if new is not value:
                setattr(obj, key, new)
    return obj


class _Realigned:
    """Unpickled adapters realign their model's arrays (see :func:`realign`)."""

    def __setstate__(self, state):
        self.__dict__.update(state)
        realign(self.model)


def _attach_images(maps, images):
    for heatmap, image in zip(maps, images):
        if heatmap.image is None and np.shape(image)[:2] == heatmap.shape:
            heatmap.image = image
    return maps


def parse_target(text, classes=None):
    """A command-line target (string) -> the class label or output index the model uses.

    ``None``/``""``/``"predicted"`` mean the predicted class. With ``classes`` (a BoW model's
    ``classes_``) the text is matched against the labels as strings; otherwise it must be an
    integer output index.
    """
    if text is None or (isinstance(text, str) and text.strip().lower() in ("", "predicted", "pred")):
        return None
    if classes is not None:
        for label in classes:
            if str(label) == str(text):
                return label.item() if isinstance(label, np.generic) else label
        names = [str(c) for c in classes]
        raise ValueError(f"unknown target class {text!r}; the model's classes are {names}")
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ValueError(f"target must be an output index (an integer), got {text!r}") from None


def _in_batches(items, size):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class BoWExplainer(_Realigned):  # implements bowlrp.explainer.Explainer
    """Adapter for a fitted :class:`~bowlrp.bow.classifier.BoWClassifier` (images are used as read).

    Parameters
    ----------
    model : fitted BoWClassifier
    batch_size : int, default=1
        Images per call of the classifier. With 1 each image is computed alone, so its numbers do
        not depend on which images share its chunk (a matrix product over a batch is blocked
        differently for different batch sizes, which can change the last bit): resumed, re-chunked
        and distributed runs give bit-identical results.
    """

    kind = "bow"

    def __init__(self, model, batch_size=1):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.batch_size = batch_size

    @property
    def classes(self):
        return list(self.model.classes_)

    def describe(self) -> dict:
        params = {k: repr(v) for k, v in sorted(self.model.get_params().items())}
        return {"kind": self.kind, "class": type(self.model).__name__, "params": params,
                "batch_size": self.batch_size}

    def prepare(self, images):
        return list(images)

    def decision(self, prepared, batch_size=None) -> np.ndarray:
        """(n, n_outputs) decision values; ``batch_size`` overrides the adapter's (None: its own)."""
        prepared = list(prepared)
        size = batch_size or self.batch_size
        scores = [np.asarray(self.model.decision_function(part), dtype=np.float64).reshape(len(part), -1)
                  for part in _in_batches(prepared, size)]
        return np.concatenate(scores, axis=0)

    def explain(self, images, target=None):
        images = self.prepare(images)
        maps = []
        for part in _in_batches(images, self.batch_size):
            maps += self.model.explain(part, target=target)
        return _attach_images(maps, images)

    def score_function(self, target):
        """prepared images -> f_target(x), the score a BoW heatmap of ``target`` explains."""
        classes = self.classes
        if target not in classes:
            raise ValueError(f"unknown target {target!r}; classes are {classes}")
        index = classes.index(target)

        def score(images):
            # one call for the whole batch of perturbed images: far faster than image by image, and
            # perturbation curves need no bit-for-bit independence from the batch composition
            values = self.decision(images, batch_size=max(1, len(images)))
            if values.shape[1] == 1:  # binary: f scores classes_[1]; classes_[0] is explained as -f
                return values[:, 0] if index == 1 else -values[:, 0]
            return values[:, index]

        return score


def _first_layer(model, skip):
    """The first layer of ``model`` that is not an instance of one of the ``skip`` classes."""
    return next((layer for layer in model.layers if not isinstance(layer, skip)), None)


def infer_input_shape(model) -> tuple[int, int, int]:
    """(C, H, W) a network expects, when the model says it or its first layer makes it clear.

    A graph imported from a file with a static input shape (``nets.load_onnx``) records it as
    ``input_shape``. A first dense layer (after any Flatten/Dropout) with n inputs is read as a square image:
    n = s² -> (1, s, s), n = 3s² -> (3, s, s). Otherwise (a convolution first: the spatial size is
    free) a ValueError asks for the shape.
    """
    from nets.layers import Dense, Dropout, Flatten

    recorded = getattr(model, "input_shape", None)
    if recorded is not None and len(recorded) == 3:
        return tuple(int(v) for v in recorded)
    first = _first_layer(model, (Flatten, Dropout))
    if isinstance(first, Dense):
        n = first.W.shape[1]
        for channels in (1, 3):
            side = int(round(np.sqrt(n / channels)))
            if channels * side * side == n:
                return (channels, side, side)
    raise ValueError(
        "cannot tell the network's input shape from the model; give it as C,H,W "
        "(command line: --input-shape 1,28,28)"
    )


def _per_channel(value, name: str, channels: int) -> np.ndarray:
    """One number or one per channel -> (channels,) floats; a clear error for another length."""
    flat = np.ravel(np.asarray(value, dtype=np.float64))
    if flat.size not in (1, channels):
        raise ValueError(f"{name} must be one number or {channels} (one per channel of the "
                         f"{channels}-channel input), got {flat.size}: {flat.tolist()}")
    return np.broadcast_to(flat, (channels,)).copy()


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float (H, W) or (H, W, C) image, channel by channel (Pillow, mode F)."""
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image
    planes = image[..., None] if image.ndim == 2 else image
    out = np.stack(
        [np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c], dtype=np.float32), mode="F")
                    .resize((width, height), Image.BILINEAR), dtype=np.float64)
         for c in range(planes.shape[2])],
        axis=2,
    )
    return out[..., 0] if image.ndim == 2 else out


def prepare_images(images, input_shape) -> list:
    """Images as read -> what a network of ``input_shape`` (C, H, W) sees: floats in [0, 1] (uint8
    divided by 255), grey (C = 1) or RGB (C = 3), resized to H x W. Networks fitted by ``bowlrp fit``
    are trained on exactly these."""
    channels, height, width = input_shape
    out = []
    for image in images:
        img = np.asarray(image)
        img = img / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[..., :3]
        if channels == 1 and img.ndim == 3:
            img = to_grey(img)
        elif channels == 3 and img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        out.append(np.clip(_resize(img, height, width), 0.0, 1.0))
    return out


def to_nchw(prepared) -> np.ndarray:
    """Prepared (H, W) or (H, W, C) images -> one (n, C, H, W) array."""
    return np.stack([p[None] if p.ndim == 2 else np.moveaxis(p, 2, 0) for p in prepared])


def network_classifier(model) -> bool:
    """True for a fitted classifier around a ``nets`` network (``model_``, ``classes_`` and
    ``input_shape_``, as :class:`nets.train.ConvNetClassifier` has): it knows its class names and
    input shape, so explaining it needs neither ``--input-shape`` nor output indices."""
    return isinstance(getattr(model, "model_", None), network_types()) and hasattr(model, "classes_")


class NetworkExplainer(_Realigned):  # implements bowlrp.explainer.Explainer
    """Adapter for a ``nets`` model: resize, scale to [0, 1], normalise, NCHW, then LRP.

    Parameters
    ----------
    model : nets.Sequential, or a fitted network classifier (``nets.train.ConvNetClassifier``)
        A classifier brings its class names (targets are then class names, and heatmaps say which
        class they explain) and its input shape.
    composite : str or Composite, default="auto"
        A ``nets`` preset name or Composite. ``"auto"``: ``"epsilon_plus_flat"`` for networks that
        start with a convolution, ``"epsilon_plus"`` for networks that start with a dense layer
        (the Flat rule on a first dense layer spreads every neuron's relevance evenly over all
        pixels, so the map would be constant).
    input_shape : (C, H, W), optional
        Default: the classifier's ``input_shape_``, else :func:`infer_input_shape`.
    mean, std : float or sequence of C floats
        The network sees ``(image01 - mean) / std``.
    batch_size : int, default=1
        Images per forward/relevance pass. With 1 every image is computed alone, so its numbers do
        not depend on which images share its chunk: a resumed, re-chunked or distributed run gives
        bit-identical results (BLAS blocks a matrix product differently for different batch sizes,
        which changes the last bit). Larger batches are faster on big convolutional networks and
        agree to rounding.
    """

    kind = "network"

    def __init__(self, model, composite="auto", input_shape=None, mean=0.0, std=1.0,
                 batch_size=1):
        from nets.layers import Conv2D, Dense, Dropout

        self.classes = None  # targets are output indices, unless the model names its classes
        if network_classifier(model):
            # output k scores classes_[k]; plain Python labels, as parse_target returns them
            self.classes = [c.item() if isinstance(c, np.generic) else c for c in model.classes_]
            if input_shape is None:
                input_shape = tuple(int(v) for v in model.input_shape_)
            model = model.model_
        if not isinstance(model, network_types()):
            raise TypeError(f"NetworkExplainer needs a nets model, got {type(model).__name__}")
        # a model that starts with a dense layer (e.g. imported from scikit-learn) takes flat rows
        self.flat_input = isinstance(_first_layer(model, Dropout), Dense)
        if composite is None or composite == "auto":
            first_linear = next((layer for layer in model.layers if isinstance(layer, (Dense, Conv2D))), None)
            composite = "epsilon_plus" if isinstance(first_linear, Dense) else "epsilon_plus_flat"
        if isinstance(composite, str):
            from nets.composites import COMPOSITES

            if composite not in COMPOSITES:
                raise ValueError(f"unknown LRP composite {composite!r}; choose one of {sorted(COMPOSITES)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.model = model
        self.composite = composite
        self.input_shape = tuple(input_shape) if input_shape is not None else infer_input_shape(model)
        if len(self.input_shape) != 3 or self.input_shape[0] not in (1, 3):
            raise ValueError(f"input_shape must be (C, H, W) with C = 1 or 3, got {self.input_shape}")
        channels = self.input_shape[0]
        self.mean = _per_channel(mean, "mean", channels)
        self.std = _per_channel(std, "std", channels)
        if np.any(self.std <= 0) or not np.all(np.isfinite(self.std)):
            raise ValueError(f"std must be positive, got {self.std}")

    @property
    def n_outputs(self) -> int:
        """Outputs of the network (one forward pass of a blank image)."""
        channels, height, width = self.input_shape
        blank = np.zeros((height, width) if channels == 1 else (height, width, 3))
        return int(self.decision([blank]).shape[1])

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "composite": str(self.composite),
            "input_shape": list(self.input_shape),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "batch_size": self.batch_size,
            "layers": [type(layer).__name__ for layer in self.model.layers],
            "classes": None if self.classes is None else [str(c) for c in self.classes],
        }

    def prepare(self, images):
        return prepare_images(images, self.input_shape)

    def to_input(self, prepared) -> np.ndarray:
        """Prepared (H, W[, 3]) images in [0, 1] -> the (n, C, H, W) array the network takes."""
        x = to_nchw(prepared)
        x = (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]
        return x.reshape(len(x), -1) if self.flat_input else x

    def _batches(self, items):
        return _in_batches(items, self.batch_size)

    def decision(self, prepared, batch_size=None) -> np.ndarray:
        """(n, n_outputs) logits; ``batch_size`` overrides the adapter's (None: its own)."""
        prepared = list(prepared)
        size = batch_size or self.batch_size
        logits = [np.asarray(self.model(self.to_input(part)), dtype=np.float64).reshape(len(part), -1)
                  for part in _in_batches(prepared, size)]
        return np.concatenate(logits, axis=0)

    def _lrp(self):
        from bowlrp.app.nets_check import import_nets

        nets = import_nets()

        kwargs = {}
        if self.composite == "epsilon_gamma_box":
            # the z^B bounds are the range the network's inputs can take: pixels 0..1, normalised
            kwargs = {"low": float(np.min((0.0 - self.mean) / self.std)),
                      "high": float(np.max((1.0 - self.mean) / self.std))}
        return nets.LRP(self.model, self.composite, **kwargs)

    def _index(self, target) -> int:
        """The output index of ``target``: a class name when the model has them, else an index."""
        if self.classes is None:
            return int(target)
        if target not in self.classes:
            raise ValueError(f"unknown target {target!r}; classes are {self.classes}")
        return self.classes.index(target)

    def explain(self, images, target=None):
        prepared = self.prepare(images)
        lrp = self._lrp()
        image_shape = self.input_shape if self.flat_input else None
        index = None if target is None else self._index(target)
        maps = []
        for part in self._batches(prepared):
            maps += lrp.explain(self.to_input(part), target=index, image_shape=image_shape)
        for heatmap, image in zip(maps, prepared):
            heatmap.image = image  # the picture the network saw, in [0, 1] (not the normalised input)
            if self.classes is not None:  # say which class, not which output
                heatmap.target = self.classes[int(heatmap.target)]
        return maps

    def score_function(self, target):
        index = self._index(target)

        def score(images):
            return self.decision(images, batch_size=max(1, len(images)))[:, index]  # one pass per batch

        return score


def as_explainer(model, composite="auto", input_shape=None, mean=0.0, std=1.0, batch_size=1):
    """Wrap a fitted BoW pipeline or a ``nets`` model in its adapter (an :class:`Explainer`, such
    as an adapter, passes through)."""
    if isinstance(model, Explainer):
        return model
    from bowlrp.app.persist import model_kind

    if network_classifier(model) or model_kind(model) == "network":
        return NetworkExplainer(model, composite=composite, input_shape=input_shape, mean=mean, std=std,
                                batch_size=batch_size)
    return BoWExplainer(model, batch_size=batch_size)
