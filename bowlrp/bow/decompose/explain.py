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
import threading
import weakref

import numba
import numpy as np

from bowlrp.bow.decompose.batch import finish_batch, plan_batch, run_batch
from bowlrp.bow.decompose.kernel import explain_bow
from bowlrp.heatmap import Heatmap
from bowlrp.jit import contiguous_parts, parallel_parts, use_parallel
from bowlrp.validation import check_fitted

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
    check_fitted(clf, ["svm_", "vocabularies_"])
    features, encodings = clf.extract_and_encode(images)
    V = clf.support_vectors_.shape[1]
    X = np.stack([e.x for e in encodings]) if encodings else np.zeros((0, V))
    decision = clf.decision_from_bows(X)
    classes = np.asarray(clf.classes_)

    if isinstance(target, np.ndarray) and target.ndim == 0:
        target = target.item()
    many = isinstance(target, (list, tuple, np.ndarray))
    if target is None:
        per_image = [[int(c)] for c in clf.predicted_class_index(decision)]
    else:
        requested = [clf.class_index(t) for t in (target if many else [target])]
        if many and not requested:
            raise ValueError("target is an empty list: give at least one class to explain")
        per_image = [requested] * len(encodings)

    binary = len(classes) == 2
    groups = [1] if binary else sorted({c for cs in per_image for c in cs})
    # each class's expansion and training scores once, shared (read-only) by the parts of the batch
    outputs = {c: _class_output(clf, c) for c in groups}
    scores = {c: clf.class_scores(decision, c) for c in {c for cs in per_image for c in cs}}
    bounds = np.array([[s.start, s.stop] for s in encodings[0].channel_slices]) if encodings else None
    n = len(encodings)
    every = max(1, n // 10)
    progress = itertools.count(1)  # images done, over the parts (next() is atomic under the GIL)

    def report():
        done = next(progress)
        if getattr(clf, "verbose", False) and (done == n or done % every == 0):
            print(f"[bowlrp] explained {done}/{n} images", file=sys.stderr, flush=True)

    context = (clf, images, features, encodings, X, per_image, many, outputs, scores, bounds,
               n_candidates, n_roots, random_state, report)
    # The decomposition of an image depends on that image only (an int seed seeds each image's root
    # search on its own), so Steps 3, 2 and 1 of the batch run in contiguous parts, one per thread,
    # when the work pays (one part per thread, as split_batch: each part pays the set-up of a root
    # search and of a batch decomposition, 6 % more CPU than one part, 22 % with two per thread). A
    # RandomState instance (or None) is consumed image after image by the Taylor kernels' draws: one
    # part then. The heatmaps are assembled after the threads: that per-map Python only waited for
    # the GIL beside the other part's (48 scenes, forward pass cached, two threads, both versions in
    # one process: 0.1-0.3 ms less of 2-4.5 ms; each map is an array the batch kernel allocated).
    work = _decomposition_work(features, per_image, outputs, n_candidates)
    independent = (isinstance(random_state, (int, np.integer))
                   or all(candidate_scores is None for _, candidate_scores in outputs.values()))
    threads = numba.get_num_threads() if independent and use_parallel(work) else 1
    n_parts = max(1, min(threads, n // _MIN_PART)) if threads > 1 else 1
    # each part's batch is planned on this thread (its concatenations and checks hold the GIL: on the
    # threads they waited for it beside the other part's Python), the last part first so that its
    # thread starts while this one plans the next, and decomposed on a thread of its own
    def plan(cut):
        lo, hi = cut
        return lo, hi, plan_batch(features[lo:hi], encodings[lo:hi],
                                  [i - lo for i in range(lo, hi) for _ in per_image[i]], V)

    parts = parallel_parts(plan, lambda planned: (planned, _decompose_part(context, *planned)),
                           contiguous_parts(n, n_parts), work)
    return [maps for planned, decomposed in parts for maps in _part_maps(context, *planned, *decomposed)]


#: smallest part of a batch decomposed on a thread of its own
_MIN_PART = 4

#: per fitted SVM (weakly: a refit makes a new ``svm_``, and a dropped model frees its entry), the
#: fitted values each class's kernel expansion was built from and the expansions (built once, not on
#: every explain: about 20 us of validation and lookups per call)
_expansions_of_svm: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_expansions_lock = threading.Lock()


def _class_output(clf, c):
    """``(kernel_expansion, training scores or None)`` of class index c of a fitted classifier: what
    ``clf.kernel_expansion(classes_[c])`` and ``clf.training_scores(c)`` give.

    The expansion is kept per fitted SVM and rebuilt when a fitted value it came from is another
    object or, for the intercepts and channel weights (copied into it), holds other values; it is kept
    only when it shares the support vectors' and coefficients' memory with the SVM, so that a change
    made to those in place reaches it too. The training scores are read anew on every call.
    """
    svm = clf.svm_
    sources = (clf.kernel, clf.gamma_, svm.support_vectors_, svm.dual_coef_, svm.intercept_,
               svm.channel_slices_, svm.channel_weights_)
    values = (np.asarray(svm.intercept_).tolist(), np.asarray(svm.channel_weights_).tolist())
    with _expansions_lock:
        kept = _expansions_of_svm.get(svm)
        if kept is None or any(a is not b for a, b in zip(kept[0], sources)) or kept[1] != values:
            kept = (sources, values, {})
            _expansions_of_svm[svm] = kept
        f = kept[2].get(c)
    if f is None:
        f = clf.kernel_expansion(np.asarray(clf.classes_)[c])
        if f.support_vectors is sources[2] and np.shares_memory(f.coef, sources[3]):
            with _expansions_lock:
                kept[2][c] = f
    return f, clf.training_scores(c) if not f.exact else None


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


def _decompose_part(context, lo, hi, plan):
    """Steps 3, 2 and 1 of images lo..hi-1 of a batch, planned (:func:`plan_batch`): the BoW relevance
    of each (image, class) and the batch kernels' results (:func:`run_batch`), for :func:`_part_maps`."""
    (clf, images, features, encodings, X, per_image, many, outputs, scores, bounds, n_candidates, n_roots,
     random_state, report) = context
    classes = np.asarray(clf.classes_)
    binary = len(classes) == 2
    # Step 3, one batched call per SVM output over the images that need it. Two classes share one
    # output: classes_[0] is explained as -f, whose relevance at every level (and Taylor root search,
    # which is symmetric under f -> -f) is exactly the negation of f's, so f is decomposed once.
    bow_rel: dict = {}
    for c, (f, candidate_scores) in outputs.items():
        rows = [i for i in range(lo, hi) if (binary and per_image[i]) or c in per_image[i]]
        if not rows:
            continue
        R3, taylor = explain_bow(f, X[rows], clf.train_bows_, n_candidates, n_roots, random_state,
                                 candidate_scores=candidate_scores)
        for k, i in enumerate(rows):
            bow_rel[i, c] = (R3[k], taylor[k], f.intercept)
            if binary and 0 in per_image[i]:
                bow_rel[i, 0] = (-R3[k], None if taylor[k] is None else taylor[k].negated(), -f.intercept)

    # Steps 2 and 1 of every (image, class) pair in one batch (numba, outside the GIL), in the order
    # of the plan's items; the maps are assembled from these arrays after the threads (_part_maps)
    items = [(i, c) for i in range(lo, hi) for c in per_image[i]]
    R3s = np.stack([bow_rel[item][0] for item in items]) if items else np.zeros((0, X.shape[1]))
    return bow_rel, run_batch(plan, R3s, sums=True)


def _part_maps(context, lo, hi, plan, bow_rel, ran):
    """The heatmaps of images lo..hi-1 from their part's arrays (:func:`_decompose_part`)."""
    (clf, images, features, encodings, X, per_image, many, outputs, scores, bounds, n_candidates, n_roots,
     random_state, report) = context
    classes = np.asarray(clf.classes_)
    method = f"bow-lrp/{clf.kernel}"
    boxes, R2s, R1s, level = finish_batch(plan, ran)  # (each map an array of its own)
    out, k, level = [], 0, level.tolist()
    for i in range(lo, hi):
        feat, enc = features[i], encodings[i]
        maps = []
        for c in per_image[i]:
            R3, taylor, intercept = bow_rel[i, c]
            # by position in ``items`` (same order): a class asked for twice gets maps of its own
            R2, R1, sums = R2s[k], R1s[k], level[k]
            k += 1
            score = scores[c][i]
            extras = {
                "kernel": clf.kernel,
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
            image = np.asarray(images[i])
            image = image if image.shape[:2] == R1.shape else None
            if math.isfinite(sums[2]):
                # a finite sum of R1 proves every pixel finite (one inf or NaN makes the sum inf or
                # NaN), and the image passed the classifier's check_images: the maps skip the public
                # constructor's per-pixel checks (a quarter of the decomposition's time), and their
                # residual takes the sum of R1 from the batch's level sums (numpy's R1.sum(), bit
                # for bit: run_batch)
                maps.append(Heatmap._trusted(R1, float(score), classes[c], method, image, extras,
                                             total=sums[2]))
            else:  # an overflowing map: the public constructor names the problem
                maps.append(Heatmap(R1, score=float(score), target=classes[c], method=method, image=image,
                                    extras=extras))
        out.append(maps if many else maps[0])
        report()
    return out
