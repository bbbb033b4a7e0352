"""The main job of ``make demo``: one BoW/SVM and one network, explained side by side.

On generated scenes (polygons vs circles on a texture, the paper's toy task, with object masks) it

1. fits a :class:`bowlrp.BoWClassifier` (dense SIFT, rank mapping, histogram-intersection SVM) and
   a small convolutional network (:class:`nets.train.ConvNetClassifier`) on the same scenes;
2. explains the "polygons" score of a few held-out scenes with both (BoW: the paper's three-step
   decomposition; network: LRP with the ``epsilon_plus_flat`` composite);
3. writes one montage (image | object mask | BoW heatmap | network heatmap) plus every heatmap as PNG
   (to look at) and NPZ (numbers), and prints accuracy, conservation and relevance inside the masks.
"""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np

from bowlrp.app import demo_ahead
from bowlrp.app.scenes import make_scenes


def _balanced(labels, n):
    """Indices of n scenes, half of each class where possible, in their original order."""
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels != 1)
    n_pos = min(len(pos), max(n - len(neg), (n + 1) // 2))
    return np.sort(np.concatenate([pos[:n_pos], neg[:n - n_pos]]))


def _say(message: str) -> None:
    print(message, flush=True)


def run(out="demo_out", n_train=800, n_test=100, n_show=6, size=64, random_state=0) -> dict:
    """Run the demo and write its files to ``out``; returns the summary it prints (also saved as JSON).

    Parameters
    ----------
    out : str or path
        Output folder (created).
    n_train, n_test : int
        Generated scenes for training and for measuring accuracy.
    n_show : int
        Held-out scenes explained and drawn.
    size : int
        Image side in pixels.
    random_state : int
        Seed of the scenes, the vocabulary and the network.
    """
    from bowlrp import BoWClassifier
    from bowlrp.app.nets_check import import_nets
    from bowlrp.evaluation import mask_fraction, relevance_mass_accuracy
    from bowlrp.heatmap import Heatmap
    from bowlrp.montages import montage

    nets = import_nets()  # before any ``from nets...``: a foreign "nets" fails here, with a clear message
    from nets.train import ConvNetClassifier

    demo_ahead.start()  # a cold numba cache: the kernels compile on the second core meanwhile

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # triangles and squares vs circles; positive scenes also hold circles, so a good map singles the
    # polygons out
    scenes = make_scenes(n_train + n_test, size=size, n_vertices=(3, 4), distractors=True,
                         random_state=random_state)
    train = scenes.subset(slice(0, n_train))
    test = scenes.subset(slice(n_train, n_train + n_test))
    positive = 1  # label of "polygons": the class both models explain
    _say(f"generated {len(scenes)} scenes of {size}x{size} pixels in memory (polygons vs circles): "
         f"{n_train} to train, {n_test} to test")

    # the network first: on a cold numba cache its training runs for seconds on kernels that compile
    # quickly, while the compile-ahead child gets the SIFT kernels (seconds each) ready for the BoW fit;
    # the other order made the run wait for those first (benchmarks/README.md, cold start)
    cnn = ConvNetClassifier("small_cnn", epochs=30, augment="flips", random_state=random_state)
    cnn.fit(train.images, train.labels)
    net_acc = float(cnn.score(test.images, test.labels))
    _say(f"network   (small CNN, 3 conv + global max pool, nets.train): test accuracy {net_acc:.3f}")

    bow = BoWClassifier(step=4, bin_sizes=(4,), vocabulary_size=128, mapping="rank", kernel="intersection",
                        C=3.0, random_state=random_state)
    bow.fit(list(train.images), train.labels)
    bow_acc = float(bow.score(list(test.images), test.labels))
    _say(f"BoW/SVM   (dense SIFT, 128 words, intersection kernel): test accuracy {bow_acc:.3f}")

    show = test.subset(_balanced(test.labels, n_show))
    bow_maps = bow.explain(list(show.images), target=positive)
    # the CNN's decision value z_polygons - z_circles, as one output: explained like the SVM's
    lrp = nets.LRP(cnn.decision_model(), composite="epsilon_plus_flat")
    net_maps = lrp.explain(show.images[:, None], target=0)
    net_maps = [Heatmap(m.relevance, score=m.score, target=positive, method=m.method, image=img,
                        residual=m.residual, extras=m.extras) for m, img in zip(net_maps, show.images)]

    cells, labels = [], []
    for i, (image, bmap, nmap) in enumerate(zip(show.images, bow_maps, net_maps)):
        bmap.save(out / f"scene{i}_bow.png")
        bmap.save(out / f"scene{i}_bow.npz")
        nmap.save(out / f"scene{i}_net.png")
        nmap.save(out / f"scene{i}_net.npz")
        cells += [image, show.positive_masks[i].astype(np.float64), bmap, nmap]
        truth = show.class_names[show.labels[i]]
        labels += [f"{truth}", "polygon mask", f"BoW f={bmap.score:+.2f}", f"net f={nmap.score:+.2f}"]
    montage_path = out / "montage.png"
    montage(cells, labels=labels, ncols=4, path=montage_path, cmap="bwr", cell_size=128)

    has_polygon = show.labels == positive
    summary = {
        "bow_test_accuracy": bow_acc,
        "network_test_accuracy": net_acc,
        "bow_max_conservation_error": max(abs(m.score - m.total) for m in bow_maps),
        "network_max_residual": max(abs(m.residual) for m in net_maps),
    }
    if has_polygon.any():  # relevance mass in the polygon masks, on the scenes that have polygons
        masks = show.positive_masks[has_polygon]
        summary["chance_mass_in_polygon_masks"] = float(np.mean(mask_fraction(masks)))
        for name, maps in (("bow", bow_maps), ("network", net_maps)):
            chosen = [m for m, p in zip(maps, has_polygon) if p]
            summary[f"{name}_mass_in_polygon_masks"] = float(np.mean(relevance_mass_accuracy(chosen, masks)))
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    S = summary
    _say(f"BoW heatmaps conserve the score: max |f(x) - sum R| = {S['bow_max_conservation_error']:.2e}")
    if "chance_mass_in_polygon_masks" in S:
        _say(f"positive relevance inside the polygon masks (chance {S['chance_mass_in_polygon_masks']:.2f}): "
             f"BoW {S['bow_mass_in_polygon_masks']:.2f}, network {S['network_mass_in_polygon_masks']:.2f}")
    _say(f"wrote {montage_path} (image | mask | BoW | network),")
    _say(f"      per-scene heatmaps (PNG to look at, NPZ numbers), summary.json in {out}/ ({S['seconds']} s)")
    return summary


if __name__ == "__main__":  # pragma: no cover
    import sys

    run(sys.argv[1] if len(sys.argv) > 1 else "demo_out")
