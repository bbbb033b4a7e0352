"""The ``bowlrp`` command: fit, explain, evaluate and compare without writing Python.

Exit codes (scripts can rely on them)::

    0    success; inputs that could not be used (unreadable, corrupt, not an image, too small)
         were skipped, listed on stderr and in the outputs (status "skipped" in scores.csv).
         With --strict, any skipped input makes the run fail with 1 instead.
    1    failure: a model or data problem (damaged or incompatible model file, no usable
         image at all, an evaluation that cannot run, ...), reported on stderr in one line.
    2    usage error: wrong or missing arguments, an input path that does not exist, an
         output folder holding a different run (use another --out or --overwrite).
    130  interrupted (Ctrl-C); `explain` and `compare` resume where they stopped when rerun.

Progress of long work goes to stderr; results (where files were written) to stdout.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings

from bowlrp.app.cli_commands import cmd_compare, cmd_demo, cmd_evaluate, cmd_explain, cmd_fit
from bowlrp.app.cli_common import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, Failure, UsageError, warn

SIFT_BACKENDS = ("numba", "opencv")
# joblib's own backends and the external one it registers on first use (dask, inside a dask client)
PARALLEL_BACKENDS = ("loky", "threading", "multiprocessing", "sequential", "dask")

_EPILOG = """exit codes: 0 success (skipped inputs are listed; --strict makes them fail), 1 failure,
2 usage error, 130 interrupted (explain/compare resume when rerun).
See docs/cli.md for a walk-through."""


# ---------------------------------------------------------------------- the parser
def _estimator_default(model: str, param: str):
    """The default of an estimator parameter, read from its signature (imported only for --help)."""
    import inspect

    from bowlrp.app.cli_commands import fit_model_class
    from bowlrp.app.cli_training import FIT_FLAGS

    signature = inspect.signature(fit_model_class(model).__init__)
    return signature.parameters[FIT_FLAGS.get(param, param)].default


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help that states each option's default: the parser's own, or for the options that set an
    estimator parameter, the estimator's (they are passed only when given)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if text is argparse.SUPPRESS or not action.option_strings or "default" in text:
            return text
        if getattr(action, "estimator_default", None) is not None:
            default = repr(_estimator_default(*action.estimator_default)).replace("%", "%%")
            return f"{text} (default: {default})"
        if not any(action.default is v for v in (None, False, argparse.SUPPRESS)):
            return f"{text} (default: %(default)s)"
        return text


def _image_size(text: str) -> tuple[int, int]:
    try:
        size = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W or S (pixels), got {text!r}") from None
    size = size * 2 if len(size) == 1 else size
    if len(size) != 2 or min(size) < 8:
        raise argparse.ArgumentTypeError(f"expected H,W or S of at least 8 pixels, got {text!r}")
    return size

def _add_common(parser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--traceback", action="store_true", help="show the full Python traceback on errors")


TRUST_HELP = ("also load joblib/pickle model files (bowlrp's earlier default, or save_model(..., "
              "format='joblib')). WARNING: loading a pickle runs any code it contains; use this only "
              "for files from a source you trust. Without it such files are refused unread.")


def _add_trust(parser) -> None:
    parser.add_argument("--trust-pickle", action="store_true", help=TRUST_HELP)


def _add_network_options(parser) -> None:
    group = parser.add_argument_group("network models (nets .npz or .onnx)")
    group.add_argument("--composite", default=None,
                       help="LRP composite: auto (default: epsilon_plus_flat for a convolution first, "
                            "epsilon_plus for a dense layer first), epsilon_plus_flat, epsilon_plus, "
                            "epsilon_alpha2_beta1, epsilon_alpha2_beta1_flat")
    group.add_argument("--input-shape", metavar="C,H,W",
                       help="input the network expects (default: read from the model); images are resized")
    group.add_argument("--mean", metavar="M[,M,M]",
                       help="the network sees (pixel/255 - mean) / std (default 0)")
    group.add_argument("--std", metavar="S[,S,S]", help="see --mean (default 1)")


def _add_max_pixels(parser) -> None:
    from bowlrp.imageio import DEFAULT_MAX_PIXELS

    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help=f"skip (and report) images with more pixels, read from the file header before "
                             f"decoding (default {DEFAULT_MAX_PIXELS:,}: about 4 GiB to explain one)")


def _add_batch_options(parser) -> None:
    parser.add_argument("-o", "--out", required=True, help="output folder (created; reruns resume in it)")
    group = parser.add_argument_group("scale")
    group.add_argument("--chunk-size", type=int, default=8, help="images per task (default 8)")
    group.add_argument("--batch-size", type=int, default=None,
                       help="images per model call within a task (default 1: every result is "
                            "independent of chunking, resuming and workers, bit for bit; larger can be "
                            "faster for big CNNs and agrees to rounding)")
    group.add_argument("-j", "--n-jobs", type=int, default=1,
                       help="worker processes (-1 = all cores; our own pool unless --parallel-backend)")
    group.add_argument("--parallel-backend", default=None, choices=PARALLEL_BACKENDS,
                       help="joblib backend of the -j workers (default: our own pool), not fit's SIFT one")
    # the old spelling: unambiguous here (explain has no SIFT backend), kept for existing scripts
    group.add_argument("--backend", dest="parallel_backend", choices=PARALLEL_BACKENDS,
                       help=argparse.SUPPRESS)
    group.add_argument("--scheduler", metavar="ADDRESS",
                       help="run on a dask distributed cluster, e.g. tcp://10.0.0.5:8786")
    group.add_argument("--limit", type=int, default=None,
                       help="explain at most N new images now; rerun to continue")
    group.add_argument("--overwrite", action="store_true",
                       help="start over instead of resuming a previous run in --out")
    out = parser.add_argument_group("output")
    out.add_argument("--no-png", action="store_true", help="do not write per-image heatmap PNGs")
    out.add_argument("--cmap", default="bwr", choices=["bwr", "coldhot", "seismic"], help="colour map")
    out.add_argument("--overlay", action="store_true", help="draw heatmaps over a grey copy of the image")
    out.add_argument("--report", metavar="PAGE.html", help="also write a self-contained HTML report")
    out.add_argument("--report-max", type=int, default=200, help="images shown in the report (default 200)")
    _add_max_pixels(parser)
    parser.add_argument("--read-mode", default="auto", choices=["auto", "gray", "rgb"],
                        help="how images are read (default: as stored)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any input had to be skipped")


def build_parser() -> argparse.ArgumentParser:
    import bowlrp

    parser = argparse.ArgumentParser(
        prog="bowlrp",
        description="Pixel-wise explanations (Layer-wise Relevance Propagation) of bag-of-words/SVM image "
                    "classifiers and neural networks.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"bowlrp {bowlrp.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    fmt = _HelpFormatter

    p = sub.add_parser("demo", help="fit a BoW/SVM and a network on generated scenes, write their heatmaps",
                       description="Fit a BoW/SVM and a network on generated scenes and write their heatmaps "
                                   "side by side.", epilog=_EPILOG, formatter_class=fmt)
    p.add_argument("-o", "--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--n-train", type=int, help="training scenes (smaller is faster)")
    p.add_argument("--n-test", type=int, help="held-out scenes for the accuracy")
    p.add_argument("--n-show", type=int, help="scenes explained and drawn")
    p.add_argument("--size", type=int, help="image side in pixels")
    p.add_argument("--random-state", type=int, help="seed")
    _add_common(p)
    p.set_defaults(func=cmd_demo, parser=p)

    p = sub.add_parser("fit", help="fit a BoW/SVM classifier or a network on labelled images -> model file",
                       description="Fit a BoW/SVM classifier (--model bow) or a small convolutional network "
                                   "(--model cnn). TRAIN is a folder with one sub-folder of images per "
                                   "class, or a CSV file with columns path,label. The model file keeps the "
                                   "class names (and a network its input shape).",
                       epilog=_EPILOG, formatter_class=fmt)
    p.add_argument("train", metavar="TRAIN", help="folder of class sub-folders, or CSV path,label")
    p.add_argument("-o", "--output", required=True, metavar="MODEL",
                   help="model file to write (the safe NPZ format; .npz is usual)")
    p.add_argument("--model", default="bow", choices=["bow", "cnn"],
                   help="bow: dense SIFT bag-of-words with a kernel SVM (BoWClassifier); cnn: a small "
                        "convolutional network (nets.train.ConvNetClassifier)")
    g = p.add_argument_group("BoW model (--model bow)")
    bow_flags = [
        g.add_argument("--vocabulary-size", type=int, help="visual words per channel"),
        g.add_argument("--kernel", help="linear, intersection, chi2, hellinger, exp_chi2, rbf"),
        g.add_argument("--gamma", type=float, help="kernel width of exp_chi2 / rbf"),
        g.add_argument("--C", dest="C", type=float, help="SVM regularisation"),
        g.add_argument("--mapping", help="hard, rank or soft"),
        g.add_argument("--p", type=float, help="p of the p-means pooling (inf = max pooling)"),
        g.add_argument("--step", type=int, help="grid step of the dense features (pixels)"),
        g.add_argument("--bin-sizes", type=lambda t: tuple(int(v) for v in t.split(",")),
                       help="SIFT bin sizes, e.g. 4 or 4,8 (one vocabulary each)"),
        g.add_argument("--color", help="gray, opponent or rgb descriptors"),
        g.add_argument("--sift-backend", choices=SIFT_BACKENDS,
                       help="dense SIFT implementation: numba or opencv"),
        g.add_argument("-j", "--n-jobs", type=int, help="parallel feature extraction"),
    ]
    # the old spelling: unambiguous here (fit has no joblib backend, the choices differ), kept for scripts
    g.add_argument("--backend", dest="sift_backend", choices=SIFT_BACKENDS, help=argparse.SUPPRESS)
    g = p.add_argument_group("network (--model cnn)")
    cnn_flags = [
        g.add_argument("--architecture", help="small_cnn (3 convolutions, global max pool) or mlp"),
        g.add_argument("--epochs", type=int, help="passes over the training images"),
        g.add_argument("--learning-rate", type=float, help="Adam step size"),
        g.add_argument("--augment", choices=["flips"],
                       help="flips: random flips/transposes of every training image (for labels they keep)"),
    ]
    g.add_argument("--image-size", metavar="H,W", type=_image_size,
                   help="the network's input size; every image is resized to it (default: the size most "
                        "training images have)")
    g = p.add_argument_group("both")
    g.add_argument("--random-state", type=int, default=0, help="seed")
    g.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="any other parameter of the chosen model (repeatable), e.g. --set rank_base=2.4 "
                        "or --set batch_size=16")
    for action in bow_flags:
        action.estimator_default = ("bow", action.dest)
    for action in cnn_flags:
        action.estimator_default = ("cnn", action.dest)
    p.add_argument("--holdout", type=float, default=None, metavar="FRACTION",
                   help="keep this stratified fraction out of training and report accuracy on it")
    p.add_argument("--read-mode", default="auto", choices=["auto", "gray", "rgb"],
                   help="how images are read: as stored, or converted to gray or RGB")
    _add_max_pixels(p)
    p.add_argument("--strict", action="store_true", help="exit 1 if any training image had to be skipped")
    _add_common(p)
    p.set_defaults(func=cmd_fit, parser=p)

    p = sub.add_parser("explain", help="heatmaps of a model's decisions on images",
                       description="Explain the decisions of MODEL (a BoW model file, a nets .npz network or "
                                   "an .onnx network) on images. Writes heatmap PNGs, relevance NPZs, "
                                   "scores.csv and relevances.npz into --out; an interrupted run resumes.",
                       epilog=_EPILOG, formatter_class=fmt)
    p.add_argument("model", metavar="MODEL")
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="image files, folders or a CSV list")
    p.add_argument("--target", default=None,
                   help="class to explain: a class name (BoW models, networks fitted by 'bowlrp fit') or "
                        "an output index (other networks); default: the predicted class")
    _add_network_options(p)
    _add_batch_options(p)
    _add_common(p)
    _add_trust(p)
    p.set_defaults(func=cmd_explain, parser=p)

    p = sub.add_parser("evaluate", help="AOPC (region perturbation) and localization of explained images",
                       description="Score the heatmaps in RUN (the --out folder of 'bowlrp explain') by "
                                   "region perturbation (AOPC of MoRF, LeRF and random orders) and, with "
                                   "--masks, by localization. Network settings are taken from RUN.",
                       epilog=_EPILOG, formatter_class=fmt)
    p.add_argument("model", metavar="MODEL", help="the model that was explained")
    p.add_argument("run", metavar="RUN", help="output folder of 'bowlrp explain'")
    p.add_argument("-o", "--out", default=None, help="output folder (default RUN/evaluation)")
    p.add_argument("--masks", metavar="DIR",
                   help="ground-truth masks (non-zero = object) named like the images")
    p.add_argument("--tolerance", type=int, default=0, help="pointing game tolerance in pixels")
    p.add_argument("--region-size", type=int, default=9, help="side of the perturbed square regions")
    p.add_argument("--steps", type=int, default=None,
                   help="perturbation steps (default: all regions, <= 100)")
    p.add_argument("--regions-per-step", type=int, default=1)
    p.add_argument("--perturbation", default="uniform", choices=["uniform", "blur", "constant"])
    p.add_argument("--orders", default="morf,lerf", help="morf and/or lerf (default morf,lerf)")
    p.add_argument("--no-random", action="store_true", help="skip the random-order baseline")
    p.add_argument("--random-state", type=int, default=0)
    p.add_argument("-j", "--n-jobs", type=int, default=1)
    p.add_argument("--report", metavar="PAGE.html", help="also write a self-contained HTML report")
    p.add_argument("--report-max", type=int, default=200)
    _add_network_options(p)
    _add_common(p)
    _add_trust(p)
    p.set_defaults(func=cmd_evaluate, parser=p)

    p = sub.add_parser("compare", help="BoW model vs network on the same images: montages and a table",
                       description="Explain the same images with a BoW model and a network; write "
                                   "side-by-side montages (image | BoW | network), compare.csv (scores, "
                                   "correlation of the maps) and the two explain folders OUT/bow and "
                                   "OUT/network.",
                       epilog=_EPILOG, formatter_class=fmt)
    p.add_argument("bow_model", metavar="BOW_MODEL")
    p.add_argument("net_model", metavar="NET_MODEL")
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="image files, folders or a CSV list")
    p.add_argument("--bow-target", default=None, help="class label to explain (default: predicted)")
    p.add_argument("--net-target", default=None, help="output index to explain (default: predicted)")
    p.add_argument("--shared-scale", action="store_true", help="one colour scale for both maps of an image")
    _add_network_options(p)
    _add_batch_options(p)
    _add_common(p)
    _add_trust(p)
    p.set_defaults(func=cmd_compare, parser=p)
    return parser


def _warning_printer(prog: str):
    """Warnings (a grid too coarse for small images, ...) as one line each, every text once: a
    batch run would otherwise repeat them, with a source line, for every chunk."""
    seen = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if text not in seen:
            seen.add(text)
            warn(f"{prog}: warning: {text}")

    return show


def main(argv=None) -> int:
    """Run the command line; returns the exit code (also used by the ``bowlrp`` script)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)  # exits with 2 on usage errors
    if unknown:  # reported by the subcommand's parser: its usage, not the top-level one
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    prog = f"bowlrp {args.command}"
    try:
        with warnings.catch_warnings():  # restores the caller's warning display afterwards
            warnings.showwarning = _warning_printer(prog)
            return args.func(args)
    except UsageError as exc:
        warn(f"{prog}: error: {exc}\n(see '{prog} --help')")
        return EXIT_USAGE
    except KeyboardInterrupt:
        warn(f"{prog}: interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # one readable line for every failure; --traceback for the details
        if getattr(args, "traceback", False):
            traceback.print_exc()
        known = isinstance(exc, (Failure, ValueError, OSError))
        message = str(exc) if known else f"{type(exc).__name__}: {exc}"
        warn(f"{prog}: error: {message}")
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
