"""Experiment 4: PASCAL VOC with BoW/SVM classifiers, heatmaps per class and relevance in the boxes.

Needs a local VOC folder (``--voc DIR``: a ``VOC2007``-style folder or a ``VOCdevkit`` holding one;
nothing is downloaded). As in the paper, one binary BoW/SVM per class is trained (rank mapping base
2.4, n = 8, as the paper used on VOC); its explanation of the class score on the images that contain
the class is scored against the union of that class's boxes: relevance mass accuracy (chance = box
area fraction), rank accuracy and pointing game.

Without a separate evaluation list (``--test-set``), the heatmaps are computed on the training images
and the table says so.

Usage::

    python experiments/e4_voc_bow.py --voc ~/data/VOCdevkit/VOC2007 --out out/voc \\
        [--classes cat dog] [--train-set trainval] [--test-set test] [--max-images 500] [--quick]
"""

from __future__ import annotations

import sys

import numpy as np

try:
    from experiments import _common as common
except ImportError:  # run as a file
    import _common as common


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0], "e4_voc_bow")
    p.add_argument("--voc", required=True, help="local PASCAL VOC folder (VOC2007-style or VOCdevkit)")
    p.add_argument("--classes", nargs="*", default=None, help="classes to explain (default: all present)")
    p.add_argument("--train-set", default="trainval", help="ImageSets/Main list to train on")
    p.add_argument(
        "--test-set", default=None, help="ImageSets/Main list to explain (default: the training images)"
    )
    p.add_argument("--max-images", type=int, default=None, help="cap on the images read from each list")
    p.add_argument(
        "--max-side", type=int, default=None, help="downscale longer image sides (default 300, quick 64)"
    )
    args = p.parse_args(argv)
    out = common.prepare_out(args.out)
    clock = common.Clock()

    from bowlrp.bow.classifier import BoWClassifier
    from bowlrp.evaluation import localization_scores
    from bowlrp.montages import montage
    from datasets.voc import VOC_CLASSES, load_voc

    q = args.quick
    max_side = args.max_side or (64 if q else 300)
    try:
        train = load_voc(args.voc, args.train_set, max_images=args.max_images, max_side=max_side)
        test = (
            load_voc(args.voc, args.test_set, max_images=args.max_images, max_side=max_side)
            if args.test_set
            else train
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"e4_voc_bow: {err}", file=sys.stderr)
        return 2
    clock.lap("load")
    classes = args.classes or [c for c, k in zip(VOC_CLASSES, train.labels.sum(0)) if k > 0]
    unknown = [c for c in classes if c not in VOC_CLASSES]
    if unknown:
        print(f"e4_voc_bow: unknown classes {unknown}", file=sys.stderr)
        return 2

    params = dict(
        step=4 if q else 3,
        bin_sizes=(4,) if q else (4, 6),
        vocabulary_size=16 if q else 256,
        mapping="rank",
        rank_base=2.4,
        rank_n=8,
        p=1.0,
        kernel="intersection",
        C=10.0,
        random_state=args.seed,
    )
    rows, skipped, items, labels = [], [], [], []
    for cls in classes:
        c = VOC_CLASSES.index(cls)
        y = train.labels[:, c]
        if y.min() == y.max():
            skipped.append({"class": cls, "reason": "needs positive and negative training images"})
            continue
        clf = BoWClassifier(**params).fit(train.images, y)
        idx = np.flatnonzero(test.labels[:, c] == 1)
        idx = [i for i in idx if test.boxes[i][test.box_classes[i] == c].size]
        if not idx:
            skipped.append({"class": cls, "reason": "no evaluation image with a box of the class"})
            continue
        images = [test.images[i] for i in idx]
        maps = common.bow_explain(clf, images, target=1)
        boxes = [test.boxes[i][test.box_classes[i] == c] for i in idx]
        loc = localization_scores(maps, boxes=boxes)
        scores = np.array([m.score for m in maps])
        rows.append(
            {
                "class": cls,
                "train images": len(y),
                "train positives": int(y.sum()),
                "explained images": len(idx),
                "mean f(x)": float(scores.mean()),
                "share f(x) > 0": float((scores > 0).mean()),
                **loc,
                "max |residual|": float(max(abs(m.residual) for m in maps)),
            }
        )
        for k in range(min(2, len(idx))):
            items += [images[k], maps[k], test.class_mask(idx[k], c) * 1.0]
            labels += [f"{test.ids[idx[k]]}", f"{cls}, f={maps[k].score:.2f}", f"{cls} boxes"]
        clock.lap(f"class {cls}")
    if items:
        montage(items, labels=labels, ncols=3, path=out / "heatmaps.png", cell_size=160)

    meta = {
        "quick": q,
        "seed": args.seed,
        "voc": train.root,
        "train set": args.train_set,
        "evaluated on": args.test_set or f"{args.train_set} (training images: no test list given)",
        "images": len(train),
        "max side": max_side,
        **{f"clf {k}": str(v) for k, v in params.items()},
        **clock.times,
    }
    tables = {"Relevance in the boxes, per class": rows}
    if skipped:
        tables["Skipped classes"] = skipped
    notes = (
        "mass_accuracy: positive relevance inside the class's boxes / all positive relevance; chance: "
        "the boxes' area fraction. Figure: `heatmaps.png` (image | heatmap | boxes)."
    )
    path = common.write_results(
        out, "e4_voc_bow", "Experiment 4: PASCAL VOC, BoW/SVM heatmaps vs boxes", tables, meta, notes
    )
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
