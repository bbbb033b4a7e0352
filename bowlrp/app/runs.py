"""Working with the output folder of a batch explanation: evaluate it, compare two of them.

:func:`evaluate_run` scores the heatmaps of a finished ``explain`` folder (``bowlrp.app.batch``) by
region perturbation (AOPC for MoRF, LeRF and a random order, ``bowlrp.evaluation``) and, when
ground-truth masks are given, by localization (relevance mass, rank accuracy, pointing game).
:func:`compare_runs` puts the heatmaps of two folders (a BoW model and a network explaining the
same images) side by side and measures how much they agree.

Images are evaluated chunk by chunk (bounded memory); the perturbation noise of a chunk is seeded by
``random_state`` and the chunk's position, so results do not depend on ``n_jobs``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import dataclass

import numpy as np

from bowlrp.app.batch import Progress
from bowlrp.app.run_folder import RELEVANCE_DIR, SCORES_CSV, csv_read, csv_text, safe_key
from bowlrp.heatmap import Heatmap
from bowlrp.imageio import IMAGE_SUFFIXES, ImageReadError, read_image
from bowlrp.montages import montage

__all__ = ["RunImage", "iter_run", "evaluate_run", "compare_runs", "find_masks"]

EVALUATION_JSON = "evaluation.json"
AOPC_CSV = "aopc.csv"
CURVES_CSV = "curves.csv"
LOCALIZATION_CSV = "localization.csv"
COMPARE_CSV = "compare.csv"


@dataclass
class RunImage:
    """One successfully explained image of a run folder."""

    key: str
    path: str
    npz: str

    def heatmap(self) -> Heatmap:
        return Heatmap.load(self.npz)


def iter_run(run_dir) -> list[RunImage]:
    """The explained images of an ``explain`` output folder, in input order.

    Raises
    ------
    ValueError
        The folder holds no finished run (no ``scores.csv``), or a row names a key that is not one
        our runs write or a result file outside the folder (a crafted table).
    """
    run_dir = os.fspath(run_dir)
    table = os.path.join(run_dir, SCORES_CSV)
    if not os.path.isfile(table):
        raise ValueError(f"{run_dir!r} is not an explain output folder (no {SCORES_CSV}); "
                         "run 'bowlrp explain' first")
    out = []
    with open(table, newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            row = {k: csv_read(v or "") for k, v in row.items() if k is not None}
            if row.get("status") != "ok":
                continue
            key = row.get("key")
            npz = os.path.join(run_dir, row.get("relevance_npz") or os.path.join(RELEVANCE_DIR, f"{key}.npz"))
            inside = os.path.commonpath([os.path.realpath(run_dir), os.path.realpath(npz)]) == \
                os.path.realpath(run_dir)
            if not safe_key(key) or not inside:
                raise ValueError(f"{table}, line {line}: key {key!r} / file {row.get('relevance_npz')!r} "
                                 "is not one an explain run writes (the table was edited or crafted)")
            out.append(RunImage(key, row.get("path", ""), npz))
    return out


def _as_unit_float(image: np.ndarray) -> np.ndarray:
    """uint8 pixels -> floats in [0, 1], the scale the BoW pipeline reads uint8 images at, so a
    perturbed float image and the original uint8 image are scored on the same scale."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image / 255.0
    return image.astype(np.float64)


def find_masks(mask_dir, images: list[RunImage]) -> dict[str, str]:
    """Mask file for each image: ``KEY.*`` or the image's own file stem, any image suffix."""
    if mask_dir is None:
        return {}
    mask_dir = os.fspath(mask_dir)
    if not os.path.isdir(mask_dir):
        raise ValueError(f"mask folder {mask_dir!r} does not exist")
    by_stem: dict[str, str] = {}
    for name in sorted(os.listdir(mask_dir)):
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(stem, os.path.join(mask_dir, name))
    found = {}
    for image in images:
        stem = os.path.splitext(os.path.basename(image.path))[0]
        path = by_stem.get(image.key) or by_stem.get(stem)
        if path is not None:
            found[image.key] = path
    return found


def _read_mask(path: str, shape) -> np.ndarray:
    """A mask image -> bool (H, W) at the heatmap's resolution (nearest neighbour: no new labels)."""
    from PIL import Image

    mask = read_image(path, mode="gray") > 0
    if mask.shape != tuple(shape):
        img = Image.fromarray(mask.astype(np.uint8) * 255)
        mask = np.asarray(img.resize((shape[1], shape[0]), Image.NEAREST)) > 0
    return mask


def _default_steps(shapes, region_size: int, regions_per_step: int) -> int:
    regions = [math.ceil(h / region_size) * math.ceil(w / region_size) for h, w in shapes]
    return min(100, min(math.ceil(k / regions_per_step) for k in regions))


def _chunk_seed(random_state: int, chunk_start: int, group: int) -> int:
    """The noise seed of one group of images: fixed by the run's seed and the group's position."""
    return int(np.random.SeedSequence([int(random_state), chunk_start, group]).generate_state(1)[0])


def _evaluate_chunk(explainer, items, chunk_start: int, orders, include_random, options, random_state):
    """Perturbation curves of a chunk of images; every order of an image sees the same noise.

    Images are grouped by explained target (each group is scored by that target's score
    function), and each group is perturbed in one call, so the model sees batches of perturbed
    images rather than one image at a time. Returns ``(rows, targets, explained scores)`` with
    ``rows[order]`` of shape (len(items), L+1) in the order of ``items``.
    """
    from bowlrp.evaluation import region_perturbation

    maps = [item.heatmap() for item in items]
    names = list(orders) + (["random"] if include_random else [])
    rows = {name: [None] * len(items) for name in names}
    groups: dict = {}
    for i, heatmap in enumerate(maps):
        groups.setdefault(json.dumps(heatmap.target), []).append(i)
    for g, members in enumerate(groups.values()):
        target = maps[members[0]].target
        model = explainer.score_function(target)
        images = [_as_unit_float(maps[i].image) for i in members]
        relevances = [maps[i].relevance for i in members]
        seed = _chunk_seed(random_state, chunk_start, g)
        for name in names:
            curve = region_perturbation(model, images, None if name == "random" else relevances,
                                        order=name, random_state=seed, **options)
            for k, i in enumerate(members):
                rows[name][i] = curve.scores[k]
    rows = {name: np.stack(values) for name, values in rows.items()}
    return rows, [h.target for h in maps], [h.score for h in maps]


def evaluate_run(explainer, run_dir, out_dir=None, *, orders=("morf", "lerf"), include_random=True,
                 region_size: int = 9, n_steps: int | None = None, regions_per_step: int = 1,
                 perturbation: str = "uniform", masks=None, tolerance: int = 0, random_state: int = 0,
                 n_jobs: int = 1, batch_size: int = 64, chunk_size: int = 16, progress: bool = True) -> dict:
    """AOPC and localization of the heatmaps in an ``explain`` output folder.

    Parameters
    ----------
    explainer : BoWExplainer or NetworkExplainer
        The model that was explained (to rescore the perturbed images).
    run_dir : str
        Output folder of ``bowlrp explain`` / :func:`bowlrp.app.batch.explain_batch`.
    out_dir : str, optional
        Where to write ``evaluation.json``, ``aopc.csv``, ``curves.csv`` and ``localization.csv``
        (default ``run_dir/evaluation``).
    orders, include_random, region_size, n_steps, regions_per_step, perturbation
        As in :func:`bowlrp.evaluation.region_perturbation`. ``n_steps`` defaults to the number of
        regions of the smallest image, at most 100, so all images share one curve length.
    masks : str, optional
        Folder of ground-truth masks (non-zero = object) named like the images or their keys.
    random_state : int
        Seeds the noise and the random order (together with the position of each chunk, so the
        numbers do not depend on ``n_jobs``).
    n_jobs : int
        Chunks evaluated in parallel (joblib).
    chunk_size : int
        Images perturbed together (bounded memory; the model scores their perturbed copies in
        batches of ``batch_size``).

    Returns
    -------
    dict : the content of ``evaluation.json``.
    """
    from joblib import Parallel, delayed

    from bowlrp.evaluation import localization_scores

    images = iter_run(run_dir)
    if not images:
        raise ValueError(f"{run_dir!r} holds no explained images")
    out_dir = os.fspath(out_dir) if out_dir is not None else os.path.join(os.fspath(run_dir), "evaluation")
    os.makedirs(out_dir, exist_ok=True)

    shapes = []
    for item in images:
        with np.load(item.npz, allow_pickle=False) as data:
            shapes.append(data["relevance"].shape)
            if "image" not in data.files:
                raise ValueError(f"{item.npz} has no image: evaluation needs the explained image")
    steps = _default_steps(shapes, region_size, regions_per_step) if n_steps is None else int(n_steps)
    options = {"region_size": region_size, "n_steps": steps, "regions_per_step": regions_per_step,
               "perturbation": perturbation, "batch_size": batch_size}
    names = list(orders) + (["random"] if include_random else [])

    bar = Progress(len(images), "evaluate", enabled=progress)

    scores = {name: np.empty((len(images), steps + 1)) for name in names}
    targets, explained_scores = [], []
    starts = range(0, len(images), int(chunk_size))
    results = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_evaluate_chunk)(explainer, images[start:start + chunk_size], start, orders, include_random,
                                 options, random_state) for start in starts)
    for start, (rows, chunk_targets, chunk_scores) in zip(starts, results):
        for name in names:
            scores[name][start:start + len(chunk_targets)] = rows[name]
        targets += chunk_targets
        explained_scores += chunk_scores
        bar.update(done=len(chunk_targets))

    # the intact image must score what the heatmap explains: catches a model/run mismatch
    explained = np.array([np.nan if s is None else s for s in explained_scores], dtype=np.float64)
    mismatch = np.abs(scores[names[0]][:, 0] - explained)
    score_check = float(np.nanmax(mismatch / np.maximum(1.0, np.abs(explained)))) if np.any(
        np.isfinite(mismatch)) else None
    if score_check is not None and score_check > 1e-6:
        sys.stderr.write(f"warning: rescoring the intact images differs from the explained scores by up to "
                         f"{score_check:.3g} (relative): is this the model that was explained?\n")

    from bowlrp.evaluation import aopc, aopc_per_image, aopc_sem

    summary = {
        "run": os.path.abspath(os.fspath(run_dir)),
        "n_images": len(images),
        "settings": {**{k: v for k, v in options.items() if k != "batch_size"},
                     "orders": names, "random_state": random_state},
        "score_check_max_rel_error": score_check,
        "aopc": {},
        "mean_curves": {},
    }
    for name in names:
        s = scores[name]
        summary["aopc"][name] = {"aopc": aopc(s), "sem": aopc_sem(s)}
        summary["mean_curves"][name] = s.mean(axis=0).tolist()

    with open(os.path.join(out_dir, AOPC_CSV), "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["key", "target", "score"] + [f"aopc_{n}" for n in names])
        for i, item in enumerate(images):
            row = [csv_text(item.key), csv_text(targets[i]), repr(float(scores[names[0]][i, 0]))]
            row += [repr(float(aopc_per_image(scores[n][i:i + 1])[0])) for n in names]
            writer.writerow(row)
    with open(os.path.join(out_dir, CURVES_CSV), "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step"] + [f"mean_score_{n}" for n in names])
        for k in range(steps + 1):
            writer.writerow([k] + [repr(float(scores[n][:, k].mean())) for n in names])

    mask_files = find_masks(masks, images)
    if masks is not None:
        rows, maps, gts, missing = [], [], [], []
        for item in images:
            if item.key not in mask_files:
                missing.append(item.key)
                continue
            heatmap = item.heatmap()
            try:
                mask = _read_mask(mask_files[item.key], heatmap.shape)
            except ImageReadError as exc:
                missing.append(item.key)
                sys.stderr.write(f"warning: skipping mask of {item.key}: {exc.reason}\n")
                continue
            if not mask.any():
                missing.append(item.key)
                continue
            one = localization_scores([heatmap.relevance], masks=[mask], tolerance=tolerance)
            rows.append([item.key, one["mass_accuracy"], one["rank_accuracy"], one["pointing_game"],
                         one["chance"]])
            maps.append(heatmap.relevance)
            gts.append(mask)
        with open(os.path.join(out_dir, LOCALIZATION_CSV), "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["key", "mass_accuracy", "rank_accuracy", "pointing_game", "mask_fraction"])
            writer.writerows([[csv_text(r[0])] + [repr(float(v)) for v in r[1:]] for r in rows])
        summary["localization"] = localization_scores(maps, masks=gts, tolerance=tolerance) if maps else None
        summary["localization_missing_masks"] = missing
        if missing:
            sys.stderr.write(f"localization: no usable mask for {len(missing)} of {len(images)} images\n")

    with open(os.path.join(out_dir, EVALUATION_JSON), "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2)
    summary["out_dir"] = out_dir
    return summary


def _resample(relevance: np.ndarray, shape) -> np.ndarray:
    """Relevance on another grid, as relevance per pixel (bilinear on the density), for correlations."""
    from PIL import Image

    if relevance.shape == tuple(shape):
        return relevance
    img = Image.fromarray(relevance.astype(np.float32), mode="F")
    return np.asarray(img.resize((shape[1], shape[0]), Image.BILINEAR), dtype=np.float64)


def _correlations(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    from scipy.stats import pearsonr, spearmanr

    a, b = a.ravel(), b.ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan, math.nan  # a constant map has no correlation with anything
    return float(pearsonr(a, b)[0]), float(spearmanr(a, b)[0])


def compare_runs(bow_dir, net_dir, out_dir, labels=("BoW", "network"), shared: bool = False,
                 cmap: str = "bwr") -> list[dict]:
    """Side-by-side montages and an agreement table for two explain folders over the same images.

    Writes ``out_dir/montage/KEY.png`` (image | first map | second map) and ``out_dir/compare.csv``
    (scores, relevance sums, residuals of both, and the Pearson and Spearman correlation of the
    two maps on the coarser of the two grids). Images explained in only one folder are listed with
    an empty comparison.

    Returns
    -------
    list of dict : the table rows.
    """
    first = {item.key: item for item in iter_run(bow_dir)}
    second = {item.key: item for item in iter_run(net_dir)}
    keys = list(first) + [k for k in second if k not in first]
    os.makedirs(os.path.join(out_dir, "montage"), exist_ok=True)
    rows = []
    for key in keys:
        a = first[key].heatmap() if key in first else None
        b = second[key].heatmap() if key in second else None
        row = {"key": key, "path": (first.get(key) or second.get(key)).path}
        for prefix, h in (("bow", a), ("net", b)):
            row[f"{prefix}_target"] = None if h is None else h.target
            row[f"{prefix}_score"] = None if h is None else h.score
            row[f"{prefix}_relevance_sum"] = None if h is None else h.total
            row[f"{prefix}_residual"] = None if h is None else h.residual
        row["pearson"] = row["spearman"] = None
        row["montage"] = ""
        if a is not None and b is not None:
            small = a.shape if a.relevance.size <= b.relevance.size else b.shape
            row["pearson"], row["spearman"] = _correlations(_resample(a.relevance, small),
                                                            _resample(b.relevance, small))
            image = a.image if a.image is not None else b.image
            items = ([image] if image is not None else []) + [a, b]
            captions = (["image"] if image is not None else []) + [
                f"{labels[0]} {a.target} f={a.score:.3g}" if a.score is not None else labels[0],
                f"{labels[1]} {b.target} f={b.score:.3g}" if b.score is not None else labels[1]]
            row["montage"] = os.path.join("montage", f"{key}.png")
            montage(items, labels=captions, path=os.path.join(out_dir, row["montage"]), shared=shared,
                    cmap=cmap, cell_size=max(128, *a.shape, *b.shape))  # room for the captions
        rows.append(row)
    with open(os.path.join(out_dir, COMPARE_CSV), "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["key"])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (repr(v) if isinstance(v, float) else csv_text(v)) for k, v in row.items()})
    return rows
