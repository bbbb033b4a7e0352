"""Experiment 3: a BoW/SVM classifier and a neural network explained on the same images.

Both models learn the synthetic polygons-vs-circles task of experiment 1 from the same training
scenes: the BoW/SVM pipeline of experiment 1, and a ReLU multilayer perceptron on the raw pixels
(scikit-learn ``MLPClassifier`` converted with ``nets.from_sklearn``). On the same positive test
images, the BoW explanation (BoW-LRP) and the network explanations (LRP with z^B on the pixels and
epsilon above, gradient x input, sensitivity) are shown side by side and scored by the same code:
relevance mass / rank accuracy and pointing game against the polygon masks, and region perturbation
(blur, MoRF / LeRF / random) of each model's own score. AOPC values are also given divided by the
mean initial score, because the two models' scores live on different scales.

Usage::

    python experiments/e3_bow_vs_net.py --out out/bow_vs_net [--quick]
"""

from __future__ import annotations

import warnings

import numpy as np

try:
    from experiments import _common as common
    from experiments.e1_synthetic_bow import bow_params, scene_params
except ImportError:  # run as a file
    import _common as common
    from e1_synthetic_bow import bow_params, scene_params


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0], "e3_bow_vs_net")
    p.add_argument("--n-train", type=int, default=None, help="training images (default 600, quick 60)")
    p.add_argument("--n-test", type=int, default=None, help="test images (default 200, quick 16)")
    args = p.parse_args(argv)
    out = common.prepare_out(args.out)
    clock = common.Clock()

    from sklearn.neural_network import MLPClassifier

    import nets
    from bowlrp.evaluation import localization_scores, perturbation_curves
    from bowlrp.heatmap import montage
    from bowlrp.pipeline import BoWClassifier
    from datasets.synthetic import make_scenes
    from nets.attribution import LRP, GradientTimesInput, Sensitivity
    from nets.composites import Composite
    from nets.layers import Dense
    from nets.rules import Epsilon, ZBox

    q = args.quick
    n_train = args.n_train or (60 if q else 600)
    n_test = args.n_test or (16 if q else 200)
    kw = scene_params(q)
    train = make_scenes(n_train, random_state=args.seed, **kw)
    test = make_scenes(n_test, random_state=args.seed + 100, **kw)
    size = kw["size"]

    # ------------------------------------------------------------------ the two models
    bow = BoWClassifier(**bow_params(q, args.seed)).fit(list(train.images), train.labels)
    clock.lap("fit BoW")
    mlp = MLPClassifier(
        hidden_layer_sizes=(32,) if q else (256, 64),
        alpha=1e-3,
        max_iter=30 if q else 300,
        early_stopping=not q,
        random_state=args.seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the short quick run
        mlp.fit(train.images.reshape(n_train, -1), train.labels)
    net = nets.from_sklearn(mlp)
    clock.lap("fit MLP")

    def net_score(images):
        images = np.asarray(images)
        return net(images.reshape(len(images), -1))[:, 0]  # logit of classes_[1] = "polygons"

    acc = {
        "BoW/SVM": float(bow.score(list(test.images), test.labels)),
        "MLP": float(mlp.score(test.images.reshape(n_test, -1), test.labels)),
    }

    # ------------------------------------------------------------------ explanations of "polygons"
    pos = test.subset(test.labels == 1)
    Xp = pos.images.reshape(len(pos), -1)
    maps = {"BoW-LRP": common.bow_explain(bow, list(pos.images), target=1)}
    lrp = Composite(layer_map=[(Dense, Epsilon(0.1))], first_map=[(Dense, ZBox(0.0, 1.0))])
    for name, explainer in (
        ("MLP LRP-zB+eps", LRP(net, lrp)),
        ("MLP gradient x input", GradientTimesInput(net)),
        ("MLP sensitivity", Sensitivity(net)),
    ):
        maps[name] = explainer.explain(Xp, target=0, image_shape=(size, size))
    clock.lap("explain")

    # ------------------------------------------------------------------ scores, same code for both
    n_pf = 6 if q else min(80, len(pos))
    r = 8
    rows = []
    for name, hm in maps.items():
        model = bow.decision_function if name.startswith("BoW") else net_score
        images = list(pos.images[:n_pf]) if name.startswith("BoW") else pos.images[:n_pf]
        curves = perturbation_curves(
            model,
            images,
            {name: [m.relevance for m in hm[:n_pf]]},
            orders=("morf", "lerf"),
            region_size=r,
            n_steps=8 if q else None,
            perturbation="blur",
            random_state=args.seed,
            batch_size=256,
        )
        f0 = float(curves[(name, "morf")].mean_curve[0])
        morf, lerf = curves[(name, "morf")].aopc, curves[(name, "lerf")].aopc
        rand = curves[("random", "random")].aopc
        loc = localization_scores(hm, masks=pos.masks["polygon"])
        rows.append(
            {
                "model": "BoW/SVM" if name.startswith("BoW") else "MLP",
                "method": name,
                "test accuracy": acc["BoW/SVM" if name.startswith("BoW") else "MLP"],
                "mass accuracy": loc["mass_accuracy"],
                "rank accuracy": loc["rank_accuracy"],
                "pointing game": loc["pointing_game"],
                "chance": loc["chance"],
                "AOPC MoRF": morf,
                "AOPC LeRF": lerf,
                "AOPC random": rand,
                "mean f(x0)": f0,
                "MoRF / |f0|": morf / abs(f0) if f0 else float("nan"),
                "random / |f0|": rand / abs(f0) if f0 else float("nan"),
            }
        )
    clock.lap("scores")

    # ------------------------------------------------------------------ side-by-side montage
    names = list(maps)
    items, labels = [], []
    for i in range(min(3 if q else 6, len(pos))):
        items.append(pos.images[i])
        labels.append("image")
        for name in names:
            items.append(maps[name][i])
            labels.append(name)
        items.append(pos.masks["polygon"][i] * 1.0)
        labels.append("polygon mask")
    montage(items, labels=labels, ncols=len(names) + 2, path=out / "bow_vs_net.png", cell_size=128)
    clock.lap("figures")

    meta = {
        "quick": q,
        "seed": args.seed,
        "n_train": n_train,
        "n_test": n_test,
        "image size": size,
        "MLP hidden layers": str(mlp.hidden_layer_sizes),
        "perturbation": f"blur, {r}x{r} regions",
        "images scored": n_pf,
        **clock.times,
    }
    notes = (
        "Both models are scored on the same positive test images with the same metric code; the "
        "perturbation curves use each model's own score (SVM decision value, MLP logit).\n\n"
        "Figure: `bow_vs_net.png` (image | BoW-LRP | MLP maps | polygon mask)."
    )
    path = common.write_results(
        out,
        "e3_bow_vs_net",
        "Experiment 3: BoW/SVM vs MLP explanations on the same images",
        {"Localization and AOPC": rows},
        meta,
        notes,
    )
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
