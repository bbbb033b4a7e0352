"""The orchestrator: explain a fitted ``BoWClassifier`` by running its forward pass backwards.

image -> local features -> mapping -> pooling -> BoW vector -> kernel SVM -> score, then
score -> BoW dimensions (:mod:`.kernel`, Eqs 24-25) -> local features (:mod:`.pooling`, Eqs 26-32)
-> pixels (:mod:`.pixels`, Eqs 33-34), each result packed into a :class:`~bowlrp.heatmap.Heatmap`.
Only public methods of the classifier are used.

Binary classifiers score the positive class ``classes_[1]``; explaining ``classes_[0]`` explains the
negated score -f(x) (the relevance of every level is negated).
"""

from __future__ import annotations

import itertools
import math
import sys
import time

import numba
import numpy as np
from sklearn.utils.validation import check_is_fitted

from bowlrp.bow.decompose.batch import decompose_batch
from bowlrp.bow.decompose.kernel import explain_bow
from bowlrp.heatmap import Heatmap
from bowlrp.jit import contiguous_parts, parallel_map, use_parallel

__all__ = ["explain_classifier"]


def explain_classifier(clf, images, target=None, n_candidates=16, n_roots=1, random_state=0):
    """Explain a fitted :class:`~bowlrp.bow.classifier.BoWClassifier` (what ``clf.explain`` runs).

    The forward pass backwards, through the classifier's public methods only: features are extracted
    (:meth:`~bowlrp.bow.classifier.BoWClassifier.extract_features`) and encoded
    (:meth:`~bowlrp.bow.classifier.BoWClassifier.encode_features`) once; the decision values come from
    :meth:`~bowlrp.bow.classifier.BoWClassifier.decision_from_bows` (the code path of
    ``decision_function``), so ``Heatmap.score`` equals ``decision_function`` exactly, and for
    sum-decomposable kernels the pixel map sums to it up to float rounding (``Heatmap.residual``).
    Then each class's :meth:`~bowlrp.bow.classifier.BoWClassifier.kernel_expansion` goes through
    Step 3 (:mod:`~bowlrp.bow.decompose.kernel`), Step 2 (:mod:`~bowlrp.bow.decompose.pooling`) and
    Step 1 (:mod:`~bowlrp.bow.decompose.pixels`).

    Parameters
    ----------
    clf : fitted BoWClassifier
    images : sequence of images
    target : None, class label, or list of class labels
        ``None`` explains each image's predicted class. A single label explains that class for
        every image. A list (or tuple / array) explains each of its classes for every image. Labels
        are matched against ``clf.classes_``; when the labels are not integers, an int is also
        accepted as an index into ``classes_``. For a binary classifier, explaining ``classes_[0]``
        explains the negated decision value.
    n_candidates, n_roots, random_state
        Root search of the Taylor kernels (see :func:`find_root`); ignored by exact kernels. An int
        seed seeds each image's search on its own, so an image's map does not depend on the batch.

    Returns
    -------
    list of Heatmap, or list of list of Heatmap
        One Heatmap per image when ``target`` is None or a single label; when ``target`` is a list,
        one list per image holding one Heatmap per requested target, in the order given.
    """
    check_is_fitted(clf, ["svm_", "vocabularies_"])
    if isinstance(target, np.ndarray) and target.ndim == 0:
        target = target.item()
    many = isinstance(target, (list, tuple, np.ndarray))
    settings = (many, n_candidates, n_roots, random_state)
    maps, forward = _fused(clf, images, target, settings)
    if maps is not None:
        return maps
    features, encodings = forward if forward is not None else clf.extract_and_encode(images)
    V = clf.support_vectors_.shape[1]
    X = np.stack([e.x for e in encodings]) if encodings else np.zeros((0, V))
    decision = clf.decision_from_bows(X)
    per_image = _per_image(clf, decision, _requested(clf, target, many), len(encodings))
    binary = len(clf.classes_) == 2
    groups = [1] if binary else sorted({c for cs in per_image for c in cs})
    batch = _Batch(clf, images, features, encodings, X, per_image, _outputs(clf, groups),
                   _scores(clf, decision, per_image), settings, _reporter(clf, len(encodings)))
    # The decomposition of an image depends on that image only (an int seed seeds each image's root
    # search on its own), so the batch runs in contiguous parts, one per thread, when the work pays:
    # the numba kernels of one part (root search, Steps 2 and 1) run while the other part's Python
    # builds its heatmaps (one part per thread, as split_batch: each part pays the set-up of a root
    # search and of a batch decomposition, 6 % more CPU than one part, 22 % with two per thread). A
    # RandomState instance (or None) is consumed image after image by the Taylor kernels' draws: one
    # part then.
    n = len(encodings)
    work = _decomposition_work(features, per_image, batch.outputs, n_candidates)
    independent = _independent(batch.outputs, random_state)
    threads = numba.get_num_threads() if independent and use_parallel(work) else 1
    n_parts = max(1, min(threads, n // _MIN_PART)) if threads > 1 else 1
    parts = parallel_map(lambda ab: _explain_part(batch, *ab), contiguous_parts(n, n_parts), work)
    return [maps for part in parts for maps in part]


class _Batch:
    """What the parts of a batch's decomposition share (read-only): the classifier, the images with
    their features, encodings and BoW vectors, the classes explained per image, each class's expansion
    (and training scores for the Taylor kernels), each class's scores, and the call's settings."""

    def __init__(self, clf, images, features, encodings, X, per_image, outputs, scores, settings, report):
        self.clf, self.images, self.features, self.encodings, self.X = clf, images, features, encodings, X
        self.per_image, self.outputs, self.scores, self.report = per_image, outputs, scores, report
        self.many, self.n_candidates, self.n_roots, self.random_state = settings
        self.bounds = (np.array([[s.start, s.stop] for s in encodings[0].channel_slices])
                       if encodings else None)


def _requested(clf, target, many):
    """Indices of the classes ``target`` asks for (None: each image's predicted class)."""
    if target is None:
        return None
    requested = [clf.class_index(t) for t in (target if many else [target])]
    if many and not requested:
        raise ValueError("target is an empty list: give at least one class to explain")
    return requested


def _per_image(clf, decision, requested, n):
    """The class indices explained for each of ``n`` images with these decision values."""
    if requested is None:
        return [[int(c)] for c in clf.predicted_class_index(decision)]
    return [requested] * n


def _outputs(clf, groups):
    """Each SVM output's expansion and (Taylor kernels) training scores, once, shared by the parts."""
    classes = np.asarray(clf.classes_)
    outputs = {}
    for c in groups:
        f = clf.kernel_expansion(classes[c])
        outputs[c] = (f, clf.training_scores(c) if not f.exact else None)
    return outputs


def _scores(clf, decision, per_image):
    """The score of every image for each class explained anywhere in the batch."""
    return {c: clf.class_scores(decision, c) for c in {c for cs in per_image for c in cs}}


def _independent(outputs, random_state):
    """Whether an image's decomposition depends on that image only, so a batch may run in parts: an
    int seed seeds each image's root search on its own, a RandomState instance (or None) is consumed
    image after image by the Taylor kernels' draws (exact kernels draw nothing)."""
    return (isinstance(random_state, (int, np.integer))
            or all(candidate_scores is None for _, candidate_scores in outputs.values()))


def _reporter(clf, n):
    """The verbose progress line, counted over the parts (``next()`` is atomic under the GIL)."""
    every = max(1, n // 10)
    progress = itertools.count(1)

    def report():
        done = next(progress)
        if getattr(clf, "verbose", False) and (done == n or done % every == 0):
            print(f"[bowlrp] explained {done}/{n} images", file=sys.stderr, flush=True)

    return report


def _fused(clf, images, target, settings):
    """The heatmaps of a batch from one pass over its parts, each thread taking its images from
    pixels to heatmaps (forward pass, decision values, decomposition: :mod:`bowlrp.bow.forward`'s
    ``then``), as ``(maps, None)``; ``(None, (features, encodings))`` when the forward pass did not
    cut the batch into parts, ``(None, None)`` when the pass does not apply (the caller then
    explains the batch stage after stage).

    The decomposition of a part needs its decision values (the scores, and the predicted classes
    when ``target`` is None). The classifier's are those of the whole batch (``decision_function``),
    and a BLAS product of some rows need not round as the product of all rows does, so a part
    decides on its own rows to go on at once, and the whole batch's values are computed after the
    barrier: a part whose values differ in any bit is explained again from them (the same code
    as the stage-after-stage path), so every number is the whole batch's, whatever BLAS does.
    """
    from bowlrp.bow.forward import extract_and_encode, own_forward

    many, _, _, random_state = settings
    if not own_forward(clf):
        return None, None  # a stage overridden (a cache, say): the stages one after the other
    try:
        requested = _requested(clf, target, many)
    except Exception:  # noqa: BLE001 - the stage path raises it after the forward pass, as it always did
        return None, None
    binary = len(clf.classes_) == 2
    groups = [1] if binary else (sorted(set(requested)) if requested is not None
                                 else list(range(len(clf.classes_))))
    outputs = _outputs(clf, groups)
    if not _independent(outputs, random_state):
        return None, None
    # (the forward pass cuts only a list, tuple or array of images into parts)
    n = len(images) if isinstance(images, (list, tuple, np.ndarray)) else 0
    report = _reporter(clf, n)

    def decompose(lo, hi, part, features, encodings):
        X = np.stack([e.x for e in encodings])
        decision = clf.decision_from_bows(X)
        per_image = _per_image(clf, decision, requested, hi - lo)
        batch = _Batch(clf, part, features, encodings, X, per_image, outputs,
                       _scores(clf, decision, per_image), settings, report)
        return decision, _explain_part(batch, 0, hi - lo)

    start = time.perf_counter()
    features, encodings, parts = extract_and_encode(clf, images, then=decompose)
    done = "extracted and encoded" if parts is None else "extracted, encoded and explained"
    clf._log(f"{done} {len(features)} images ({time.perf_counter() - start:.1f} s)")
    if parts is None:
        return None, (features, encodings)
    X = np.stack([e.x for e in encodings])
    decision = clf.decision_from_bows(X)  # the values of decision_function, bit for bit
    out, whole = [], None
    for (lo, hi), part in parts:
        if part is not None and part[0].tobytes() == decision[lo:hi].tobytes():
            out += part[1]
            continue
        # the part's own decision values differ from the batch's in some bit: its maps again, from
        # the batch's values (the stage path's code)
        if whole is None:
            per_image = _per_image(clf, decision, requested, n)
            whole = _Batch(clf, images, features, encodings, X, per_image, outputs,
                           _scores(clf, decision, per_image), settings, lambda: None)
        out += _explain_part(whole, lo, hi)
    return out, None
#: smallest part of a batch decomposed on a thread of its own
_MIN_PART = 4


def _decomposition_work(features, per_image, outputs, n_candidates):
    """Operations of the decomposition, in the units of :func:`bowlrp.jit.use_parallel` (Gram terms).

    Measured on one thread: the decomposition of 48 maps of 96 x 96 (442k pixels, exact kernel) took
    4-5 ms, 1e7 Gram terms 1.2-1.8 ms, so a pixel costs about 60 Gram terms' time; about half of it was
    Python (the maps' assembly), which threads only overlap with the other part's kernels, so a pixel
    counts 24. (Since the maps skip the constructor's per-pixel checks it takes about 3.1 ms, a third
    of it Python; the weight is kept, the threshold still splits batches of that size.)
    A Taylor root search adds about ten evaluations of f per segment, n_sv x V terms each.
    """
    pixels = sum(f.image_shape[0] * f.image_shape[1] * len(cs) for f, cs in zip(features, per_image))
    work = 24.0 * pixels
    for f, candidate_scores in outputs.values():
        if candidate_scores is not None:
            work += 10.0 * len(per_image) * int(n_candidates) * f.support_vectors.size
    return work


def _explain_part(batch, lo, hi):
    """The heatmaps of images lo..hi-1 of a batch: Step 3 per SVM output, then Steps 2 and 1."""
    clf, features, encodings, per_image = batch.clf, batch.features, batch.encodings, batch.per_image
    classes = np.asarray(clf.classes_)
    binary = len(classes) == 2
    # Step 3, one batched call per SVM output over the images that need it. Two classes share one
    # output: classes_[0] is explained as -f, whose relevance at every level (and Taylor root search,
    # which is symmetric under f -> -f) is exactly the negation of f's, so f is decomposed once.
    bow_rel: dict = {}
    for c, (f, candidate_scores) in batch.outputs.items():
        rows = [i for i in range(lo, hi) if (binary and per_image[i]) or c in per_image[i]]
        if not rows:
            continue
        R3, taylor = explain_bow(f, batch.X[rows], clf.train_bows_, batch.n_candidates, batch.n_roots,
                                 batch.random_state, candidate_scores=candidate_scores)
        for k, i in enumerate(rows):
            bow_rel[i, c] = (R3[k], taylor[k], f.intercept)
            if binary and 0 in per_image[i]:
                bow_rel[i, 0] = (-R3[k], None if taylor[k] is None else taylor[k].negated(), -f.intercept)

    # Steps 2 and 1 of every (image, class) pair in one batch (numba, outside the GIL), then the maps
    # are assembled image by image
    items = [(i, c) for i in range(lo, hi) for c in per_image[i]]
    R3s = np.stack([bow_rel[item][0] for item in items]) if items else np.zeros((0, batch.X.shape[1]))
    boxes, R2s, R1s, level = decompose_batch(features[lo:hi], encodings[lo:hi], [i - lo for i, _ in items],
                                             R3s, sums=True)
    # what every map of the part shares, and the scores and labels as Python objects (a numpy
    # scalar per map costs more, under the GIL, than one conversion of the part)
    kernel, method, bounds = clf.kernel, f"bow-lrp/{clf.kernel}", batch.bounds
    scores = {c: batch.scores[c][lo:hi].tolist() for c in {c for _, c in items}}
    labels = {c: classes[c] for c in scores}
    out, k, level = [], 0, level.tolist()
    for i in range(lo, hi):
        feat, enc = features[i], encodings[i]
        image = np.asarray(batch.images[i])
        maps = []
        for c in per_image[i]:
            R3, taylor, intercept = bow_rel[i, c]
            # by position in ``items`` (same order): a class asked for twice gets maps of its own
            R2, R1, sums = R2s[k], R1s[k], level[k]
            k += 1
            score = scores[c][i - lo]
            extras = {
                "kernel": kernel,
                "p": float(enc.p),
                "intercept": float(intercept),
                "bow": enc.x,
                "bow_relevance": R3,
                "feature_relevance": R2,
                "feature_centers": feat.centers,
                "feature_support": feat.support,
                "feature_channel": feat.channel,
                "feature_boxes": boxes[i - lo],
                "channel_slices": bounds,
                "level_sums": {"bow": sums[0], "features": sums[1], "pixels": sums[2]},
            }
            if taylor is not None:
                extras["taylor"] = {
                    "root": taylor.root,
                    "f_root": float(taylor.f_root),
                    "residual": float(taylor.residual),
                    "bracketed": int(taylor.bracketed),
                    "n_roots": int(taylor.roots.shape[0]),
                    "candidate": int(taylor.candidate),
                }
            shown = image if image.shape[:2] == R1.shape else None
            if math.isfinite(sums[2]):
                # a finite sum of R1 proves every pixel finite (one inf or NaN makes the sum inf or
                # NaN), and the image passed the classifier's check_images: the maps skip the public
                # constructor's per-pixel checks (a quarter of the decomposition's time), and their
                # residual takes the sum of R1 from the batch's level sums (numpy's R1.sum(), bit
                # for bit: decompose_batch)
                maps.append(Heatmap._trusted(R1, score, labels[c], method, shown, extras, total=sums[2]))
            else:  # an overflowing map: the public constructor names the problem
                maps.append(Heatmap(R1, score=score, target=labels[c], method=method, image=shown,
                                    extras=extras))
        out.append(maps if batch.many else maps[0])
        batch.report()
    return out
