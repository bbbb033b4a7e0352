"""Experiment 5: LRP heatmaps of an ONNX image classifier for its top classes.

The model is imported with ``nets.load_onnx`` (feed-forward chains: Gemm/MatMul, Conv, pooling,
ReLU and friends, batch norm folded). Images are resized to the model's input size, scaled to [0, 1]
and optionally normalised with ``--mean`` / ``--std`` (per channel, as the model was trained). Each
image's top-k classes are explained by LRP with a composite preset (default: epsilon_gamma_box for
convolutional models, with the box bounds set to the normalised pixel range; epsilon_plus
otherwise). The table lists every explained logit with the relevance sum and what bias and
stabilisers absorbed.

Usage::

    python experiments/e5_onnx_heatmaps.py --model net.onnx --out out/onnx \\
        [--images a.jpg b.png] [--top 3] [--mean 0.485 0.456 0.406] [--std 0.229 0.224 0.225] \\
        [--labels classes.txt] [--composite epsilon_plus_flat] [--quick]

Without ``--images``, scikit-image's bundled photos (chelsea, coffee, astronaut) are used.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

try:
    from experiments import _common as common
except ImportError:  # run as a file
    import _common as common


def onnx_input_shape(path):
    """Per-sample input shape (C, H, W) or (K,) recorded in the ONNX file; None for unknown dims."""
    import onnx

    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs:
        raise ValueError(f"{path}: the graph has no data input")
    dims = inputs[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.dim_value > 0 else None for d in dims[1:])


def load_images(paths, quick):
    """name -> (H, W, 3) float64 in [0, 1]."""
    if not paths:
        from datasets.bundled import load_photos

        names = ["chelsea"] if quick else ["chelsea", "coffee", "astronaut"]
        return load_photos(names)
    from PIL import Image

    out = {}
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise FileNotFoundError(f"image not found: {p}")
        with Image.open(p) as im:
            out[p.stem] = np.asarray(im.convert("RGB"), np.float64) / 255.0
    return out


def to_input(image, shape, mean, std):
    """Resize an (H, W, 3) image in [0, 1] to the model's (C, H, W) input, then normalise."""
    from PIL import Image

    c, h, w = shape
    im = Image.fromarray(np.round(image * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    x = np.asarray(im, np.float64) / 255.0
    if c == 1:
        x = (x @ np.array([0.299, 0.587, 0.114]))[None]
    elif c == 3:
        x = np.moveaxis(x, -1, 0)
    else:
        raise ValueError(f"the model takes {c} input channels; only 1 (gray) and 3 (RGB) are supported")
    return (x - mean[:, None, None]) / std[:, None, None], x


def main(argv=None):
    p = common.parser(__doc__.splitlines()[0], "e5_onnx_heatmaps")
    p.add_argument("--model", required=True, help="path of the .onnx file")
    p.add_argument("--images", nargs="*", default=None, help="image files (default: bundled photos)")
    p.add_argument("--top", type=int, default=3, help="number of top classes explained per image")
    p.add_argument("--mean", type=float, nargs="*", default=None, help="per-channel mean to subtract")
    p.add_argument("--std", type=float, nargs="*", default=None, help="per-channel std to divide by")
    p.add_argument("--labels", default=None, help="text file with one class name per line")
    p.add_argument("--composite", default=None, help="LRP composite preset name")
    p.add_argument(
        "--input-shape",
        type=int,
        nargs=3,
        default=None,
        metavar=("C", "H", "W"),
        help="input shape when the file leaves it dynamic",
    )
    args = p.parse_args(argv)
    out = common.prepare_out(args.out)
    clock = common.Clock()

    import nets
    from bowlrp.montages import montage
    from nets.attribution import LRP
    from nets.layers import Conv2D

    path = Path(args.model)
    if not path.is_file():
        print(f"e5_onnx_heatmaps: model file not found: {path}", file=sys.stderr)
        return 2
    shape = tuple(args.input_shape) if args.input_shape else onnx_input_shape(path)
    if len(shape) != 3 or any(d is None for d in shape):
        print(
            f"e5_onnx_heatmaps: the model's input shape {shape} is not a fixed (C, H, W); "
            "pass --input-shape C H W",
            file=sys.stderr,
        )
        return 2
    model = nets.load_onnx(path, input_shape=shape)
    c = shape[0]
    mean = np.broadcast_to(np.asarray(args.mean if args.mean else [0.0], np.float64), (c,))
    std = np.broadcast_to(np.asarray(args.std if args.std else [1.0], np.float64), (c,))
    if np.any(std <= 0):
        print("e5_onnx_heatmaps: --std must be positive", file=sys.stderr)
        return 2
    class_names = None
    if args.labels:
        class_names = [line.strip() for line in Path(args.labels).read_text().splitlines() if line.strip()]
    clock.lap("load model")

    images = load_images(args.images, args.quick)
    X, shown = [], []
    for img in images.values():
        x, raw = to_input(img, shape, mean, std)
        X.append(x)
        shown.append(raw[0] if c == 1 else np.moveaxis(raw, 0, -1))
    X = np.stack(X)
    logits = model(X)
    if logits.ndim != 2:
        logits = logits.reshape(len(X), -1)
    n_classes = logits.shape[1]
    k = max(1, min(args.top, n_classes))

    has_conv = any(isinstance(layer, Conv2D) for layer in model.layers)
    composite = args.composite or ("epsilon_gamma_box" if has_conv else "epsilon_plus")
    kwargs = {}
    if composite == "epsilon_gamma_box":
        kwargs = {"low": (0.0 - mean) / std, "high": (1.0 - mean) / std}  # the pixel range, normalised
    lrp = LRP(model, composite, **kwargs)
    top = np.argsort(-logits, axis=1)[:, :k]
    rows, items, labels = [], [], []
    for i, name in enumerate(images):
        maps = [hm[0] for hm in lrp.explain_many(X[i : i + 1], [int(t) for t in top[i]])]
        items.append(shown[i])
        labels.append(name)
        for rank, (t, hm) in enumerate(zip(top[i], maps), 1):
            cname = class_names[t] if class_names and t < len(class_names) else str(int(t))
            rows.append(
                {
                    "image": name,
                    "rank": rank,
                    "class": cname,
                    "logit": float(logits[i, t]),
                    "sum R": float(hm.relevance.sum()),
                    "residual (bias, eps)": float(hm.residual),
                }
            )
            items.append(hm)
            labels.append(f"{rank}: {cname} ({logits[i, t]:.2f})")
    montage(items, labels=labels, ncols=k + 1, path=out / "heatmaps.png", cell_size=160)
    clock.lap("explain")

    meta = {
        "quick": args.quick,
        "model": str(path),
        "input shape": str(shape),
        "classes": n_classes,
        "layers": len(model.layers),
        "composite": composite,
        "mean": str(mean.tolist()),
        "std": str(std.tolist()),
        **clock.times,
    }
    notes = "Figure: `heatmaps.png` (image | heatmaps of the top classes, red = for the class)."
    path = common.write_results(
        out,
        "e5_onnx_heatmaps",
        "Experiment 5: LRP heatmaps of an ONNX model",
        {"Explained logits": rows},
        meta,
        notes,
    )
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
