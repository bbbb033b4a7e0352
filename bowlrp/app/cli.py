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
import ast
import hashlib
import json
import os
import sys
import traceback

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

_EPILOG = """exit codes: 0 success (skipped inputs are listed; --strict makes them fail), 1 failure,
2 usage error, 130 interrupted (explain/compare resume when rerun).
See docs/cli.md for a walk-through."""


class UsageError(Exception):
    """The command line is wrong (exit code 2)."""


class Failure(Exception):
    """The command ran but could not do its job (exit code 1)."""


# ---------------------------------------------------------------------- small helpers
def _say(text: str) -> None:
    print(text, flush=True)


def _warn(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{name} must be numbers separated by commas, got {text!r}") from None


def _input_shape(text):
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise UsageError(f"--input-shape must be C,H,W (e.g. 1,28,28), got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"--input-shape must be three positive integers C,H,W, got {text!r}")
    return shape


def _check_inputs(paths) -> None:
    for path in paths:
        if not os.path.exists(path):
            raise UsageError(f"input {path!r} does not exist")


def _load_model(path: str):
    from bowlrp.app.persist import load_model

    if not os.path.exists(path):
        raise UsageError(f"model file {path!r} does not exist")
    try:
        return load_model(path)
    except ImportError as exc:  # e.g. .onnx without the onnx extra
        raise Failure(f"cannot load {path}: {exc} (install bowlrp[onnx] for ONNX models)") from exc


def _explainer(model, args, network_settings=None):
    from bowlrp.app.adapters import as_explainer

    settings = dict(network_settings or {})
    if getattr(args, "input_shape", None) is not None:
        settings["input_shape"] = _input_shape(args.input_shape)
    if getattr(args, "mean", None) is not None:
        settings["mean"] = _floats(args.mean, "--mean")
    if getattr(args, "std", None) is not None:
        settings["std"] = _floats(args.std, "--std")
    if getattr(args, "batch_size", None) is not None:
        settings["batch_size"] = args.batch_size
    composite = getattr(args, "composite", None) or settings.pop("composite", "auto")
    settings.pop("composite", None)
    try:
        return as_explainer(model, composite=composite, **settings)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _target(explainer, text):
    from bowlrp.app.adapters import parse_target

    classes = explainer.classes if explainer.kind == "bow" else None
    try:
        return parse_target(text, classes)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _report_skipped(result, strict: bool) -> None:
    if result.skipped:
        _warn(f"skipped {len(result.skipped)} of {result.total} inputs:")
        for _key, path, reason in result.skipped[:20]:
            _warn(f"  {path}: {reason}")
        if len(result.skipped) > 20:
            _warn(f"  ... and {len(result.skipped) - 20} more (see scores.csv)")
    if result.ok == 0:
        raise Failure("no image could be explained")
    if strict and result.skipped:
        raise Failure(f"{len(result.skipped)} inputs were skipped (--strict)")


# ---------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from bowlrp.app import demo

    # only the sizes given on the command line are passed: demo.run's own defaults stay the default
    sizes = {name: getattr(args, name) for name in ("n_train", "n_test", "n_show", "size", "random_state")
             if getattr(args, name) is not None}
    demo.run(args.out, **sizes)
    return EXIT_OK


# ---------------------------------------------------------------------- fit
_FIT_FLAGS = {  # command-line flag (dest) -> BoWClassifier parameter
    "vocabulary_size": "vocabulary_size",
    "kernel": "kernel",
    "gamma": "gamma",
    "C": "C",
    "mapping": "mapping",
    "p": "p",
    "step": "step",
    "bin_sizes": "bin_sizes",
    "color": "color",
    "backend": "backend",
    "random_state": "random_state",
    "n_jobs": "n_jobs",
}


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _fit_params(args, estimator_class) -> dict:
    valid = estimator_class().get_params()
    params = {}
    for dest, name in _FIT_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None and name in valid:
            params[name] = value
        elif value is not None:
            raise UsageError(f"--{dest.replace('_', '-')} is not a parameter of {estimator_class.__name__}")
    for assignment in args.set or []:
        name, sep, text = assignment.partition("=")
        if not sep:
            raise UsageError(f"--set expects NAME=VALUE, got {assignment!r}")
        if name not in valid:
            raise UsageError(f"unknown BoWClassifier parameter {name!r}; known: {', '.join(sorted(valid))}")
        params[name] = _literal(text)
    return params


def _training_set(source: str):
    from bowlrp.imageio import labelled_folder, read_label_csv

    if not os.path.exists(source):
        raise UsageError(f"training data {source!r} does not exist")
    try:
        if os.path.isdir(source):
            return labelled_folder(source)
        if source.lower().endswith(".csv"):
            return read_label_csv(source)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    raise UsageError(f"training data must be a folder with one sub-folder per class or a CSV, got {source!r}")


def cmd_fit(args) -> int:
    import numpy as np

    from bowlrp.imageio import read_images
    from bowlrp.app.persist import save_model
    from bowlrp.bow.classifier import BoWClassifier

    params = _fit_params(args, BoWClassifier)
    paths, labels = _training_set(args.train)
    images, ok, skipped = read_images(paths, mode=args.read_mode)
    # images smaller than one descriptor support carry no feature: skip them like unreadable files
    bins = params.get("bin_sizes", BoWClassifier().bin_sizes)
    support = 4 * max(bins if isinstance(bins, (tuple, list)) else (bins,))
    usable = [min(image.shape[:2]) >= support for image in images]
    skipped += [(path, f"smaller than one descriptor support ({support}x{support} pixels)")
                for path, use in zip(ok, usable) if not use]
    images = [image for image, use in zip(images, usable) if use]
    ok = [path for path, use in zip(ok, usable) if use]
    for path, reason in skipped:
        _warn(f"skipped {path}: {reason}")
    if args.strict and skipped:
        raise Failure(f"{len(skipped)} training images were skipped (--strict)")
    keep = {p: i for i, p in enumerate(paths)}
    y = np.array([labels[keep[p]] for p in ok])
    if len(set(y.tolist())) < 2:
        raise Failure(f"need images of at least two classes, got {sorted(set(y.tolist()))}")
    fit_images, fit_y = images, y
    test_images = test_y = None
    if args.holdout:
        from sklearn.model_selection import train_test_split

        if not 0.0 < args.holdout < 1.0:
            raise UsageError(f"--holdout must be a fraction in (0, 1), got {args.holdout}")
        index = np.arange(len(y))
        try:
            train_idx, test_idx = train_test_split(index, test_size=args.holdout, stratify=y,
                                                   random_state=args.random_state or 0)
        except ValueError as exc:
            raise UsageError(f"--holdout {args.holdout}: {exc}") from None
        fit_images, fit_y = [images[i] for i in train_idx], y[train_idx]
        test_images, test_y = [images[i] for i in test_idx], y[test_idx]
    if not args.quiet:
        _warn(f"fit: {len(fit_y)} images, classes {sorted(set(fit_y.tolist()))}, parameters {params}")
    # the classifier reports its long steps (features, vocabulary, SVM) on stderr while fitting;
    # the saved model is quiet, so that explaining with it does not log every image
    verbose = params.get("verbose", not args.quiet)
    clf = BoWClassifier(**{**params, "verbose": verbose}).fit(fit_images, fit_y)
    clf.set_params(verbose=params.get("verbose", False))
    for part in vars(clf).values():  # fitted parts (extractor, SVMs) copied the flag at fit time
        if hasattr(part, "verbose") and hasattr(part, "get_params"):
            part.verbose = clf.verbose
    save_model(clf, args.output)
    _say(f"model saved to {args.output} (classes: {', '.join(map(str, clf.classes_))}; "
         f"{len(fit_y)} training images; {len(skipped)} skipped)")
    info = {"model": args.output, "classes": [str(c) for c in clf.classes_], "n_train": int(len(fit_y)),
            "skipped": [[p, r] for p, r in skipped], "params": {k: repr(v) for k, v in params.items()},
            "train_accuracy": float(clf.score(fit_images, fit_y))}
    if test_images is not None:
        info["holdout_accuracy"] = float(clf.score(test_images, test_y))
        info["n_holdout"] = int(len(test_y))
        _say(f"held-out accuracy: {info['holdout_accuracy']:.3f} on {len(test_y)} images")
    with open(args.output + ".json", "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2)
    return EXIT_OK


# ---------------------------------------------------------------------- explain
def _batch_options(args) -> dict:
    if args.chunk_size < 1:
        raise UsageError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    if args.limit is not None and args.limit < 0:
        raise UsageError(f"--limit must be >= 0, got {args.limit}")
    return {
        "chunk_size": args.chunk_size,
        "n_jobs": args.n_jobs,
        "backend": args.backend,
        "scheduler": args.scheduler,
        "limit": args.limit,
        "resume": not args.overwrite,
        "png": not args.no_png,
        "cmap": args.cmap,
        "overlay": args.overlay,
        "read_mode": args.read_mode,
        "progress": not args.quiet,
    }


def _run_batch(explainer, model_path, inputs, out_dir, target, options):
    from bowlrp.app.batch import RunMismatchError, explain_batch
    from bowlrp.imageio import list_images

    try:
        items = list_images(inputs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    run_info = {"model_sha256": _file_digest(model_path)}
    try:
        return explain_batch(explainer, items, out_dir, target=target, run_info=run_info, **options)
    except RunMismatchError as exc:
        raise UsageError(str(exc)) from None


def _run_rows(run_dir, max_rows):
    from bowlrp.app.report import ReportRow
    from bowlrp.app.runs import iter_run

    rows = []
    for item in iter_run(run_dir)[:max_rows]:
        heatmap = item.heatmap()
        rows.append(ReportRow(item.key, {heatmap.method or "relevance": heatmap}, info={"path": item.path}))
    return rows


def _evaluation_parts(path, summary=None):
    """AOPC table and mean perturbation curves of an evaluation (``evaluation.json``), if there is one."""
    if summary is None:
        if not os.path.isfile(path):
            return [], []
        with open(path, encoding="utf-8") as fh:
            summary = json.load(fh)
    n = summary.get("n_images")
    table = [(name, v["aopc"], v["sem"]) for name, v in summary.get("aopc", {}).items()]
    tables = [(f"AOPC over {n} images (area over the perturbation curve; higher = faster drop)",
               ["order", "AOPC", "sem"], table)]
    loc = summary.get("localization")
    if loc:
        tables.append(("Localization", ["metric", "value"], list(loc.items())))
    curves = [("Mean score while perturbing regions", dict(summary.get("mean_curves", {})),
               "perturbation step", "mean score")]
    return tables, curves


def cmd_explain(args) -> int:
    from bowlrp.app.report import write_report

    _check_inputs(args.inputs)
    model = _load_model(args.model)
    explainer = _explainer(model, args)
    target = _target(explainer, args.target)
    result = _run_batch(explainer, args.model, args.inputs, args.out, target, _batch_options(args))
    _say(f"explained {result.ok} of {result.total} images ({result.new} new) -> {args.out}")
    _say(f"  scores: {result.scores_csv}\n  relevances: {result.relevances_npz}")
    if result.pending:
        _say(f"  {result.pending} images still pending (--limit): rerun the same command to continue")
    if args.report:
        summary = {"model": args.model, "model kind": explainer.kind, "target": args.target or "predicted",
                   "images": result.total, "explained": result.ok, "skipped": len(result.skipped),
                   "pending": result.pending, "output folder": os.path.abspath(args.out)}
        tables, curves = _evaluation_parts(os.path.join(args.out, "evaluation", "evaluation.json"))
        write_report(args.report, _run_rows(args.out, args.report_max), title=f"bowlrp explain: {args.model}",
                     summary=summary, skipped=result.skipped, cmap=args.cmap, overlay=args.overlay,
                     tables=tables, curves=curves,
                     max_rows=args.report_max)
        _say(f"  report: {args.report}")
    _report_skipped(result, args.strict)
    return EXIT_OK


# ---------------------------------------------------------------------- evaluate
def _run_settings(run_dir) -> dict:
    path = os.path.join(run_dir, "run.json")
    if not os.path.isfile(path):
        raise UsageError(f"{run_dir!r} is not an explain output folder (no run.json)")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def cmd_evaluate(args) -> int:
    from bowlrp.app.report import ReportRow, write_report
    from bowlrp.app.runs import evaluate_run, iter_run

    if not os.path.isdir(args.run):
        raise UsageError(f"{args.run!r} is not a folder (give the --out folder of 'bowlrp explain')")
    run = _run_settings(args.run)
    model = _load_model(args.model)
    recorded = run.get("run_info", {}).get("model_sha256")
    if recorded and recorded != _file_digest(args.model):
        raise Failure(f"{args.run} was explained with a different model file than {args.model}")
    described = run.get("explainer", {}) if isinstance(run.get("explainer"), dict) else {}
    network_settings = {k: described[k] for k in ("input_shape", "mean", "std", "composite", "batch_size")
                        if k in described}
    explainer = _explainer(model, args, network_settings)
    orders = [o.strip().lower() for o in args.orders.split(",") if o.strip()]
    bad = [o for o in orders if o not in ("morf", "lerf")]
    if bad or not orders:
        raise UsageError(f"--orders takes morf and/or lerf, got {args.orders!r}")
    if args.region_size < 1 or (args.steps is not None and args.steps < 1) or args.regions_per_step < 1:
        raise UsageError("--region-size, --steps and --regions-per-step must be positive")
    if args.masks is not None and not os.path.isdir(args.masks):
        raise UsageError(f"mask folder {args.masks!r} does not exist")
    out_dir = args.out or os.path.join(args.run, "evaluation")
    try:
        summary = evaluate_run(explainer, args.run, out_dir, orders=orders, include_random=not args.no_random,
                               region_size=args.region_size, n_steps=args.steps,
                               regions_per_step=args.regions_per_step, perturbation=args.perturbation,
                               masks=args.masks, tolerance=args.tolerance, random_state=args.random_state,
                               n_jobs=args.n_jobs, progress=not args.quiet)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    for name, values in summary["aopc"].items():
        _say(f"AOPC {name}: {values['aopc']:.4g} (± {values['sem']:.2g})")
    loc = summary.get("localization")
    if loc:
        _say(f"relevance mass accuracy {loc['mass_accuracy']:.3f}, rank accuracy {loc['rank_accuracy']:.3f}, "
             f"pointing game {loc['pointing_game']:.3f} "
             f"(chance {loc['chance']:.3f}, {loc['n_images']} images)")
    _say(f"evaluation written to {out_dir}")
    if args.report:
        settings = summary["settings"]
        tables, curves = _evaluation_parts(None, summary)
        aopc_rows = _read_csv_rows(os.path.join(out_dir, "aopc.csv"))
        rows = []
        for item in iter_run(args.run)[:args.report_max]:
            heatmap = item.heatmap()
            info = {k: float(v) for k, v in aopc_rows.get(item.key, {}).items() if k.startswith("aopc_")}
            rows.append(ReportRow(item.key, {heatmap.method or "relevance": heatmap}, info=info))
        write_report(args.report, rows, title=f"bowlrp evaluate: {args.run}",
                     summary={"model": args.model, "run": args.run, "images": summary["n_images"],
                              **{k: str(v) for k, v in settings.items()}},
                     tables=tables, curves=curves, max_rows=args.report_max)
        _say(f"  report: {args.report}")
    return EXIT_OK


def _read_csv_rows(path) -> dict:
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return {row["key"]: row for row in csv.DictReader(fh)}


# ---------------------------------------------------------------------- compare
def cmd_compare(args) -> int:
    import numpy as np

    from bowlrp.app.report import ReportRow, write_report
    from bowlrp.app.runs import compare_runs, iter_run

    _check_inputs(args.inputs)
    bow = _explainer(_load_model(args.bow_model), args)
    net = _explainer(_load_model(args.net_model), args)
    if bow.kind != "bow":
        raise UsageError(f"{args.bow_model} is not a BoW model (it is a {bow.kind})")
    if net.kind != "network":
        raise UsageError(f"{args.net_model} is not a network (it is a {net.kind} model)")
    options = _batch_options(args)
    results = {}
    for name, explainer, path, target in (("bow", bow, args.bow_model, args.bow_target),
                                          ("network", net, args.net_model, args.net_target)):
        if not args.quiet:
            _warn(f"compare: explaining with the {name} model")
        results[name] = _run_batch(explainer, path, args.inputs, os.path.join(args.out, name),
                                   _target(explainer, target), options)
    rows = compare_runs(os.path.join(args.out, "bow"), os.path.join(args.out, "network"), args.out,
                        shared=args.shared_scale, cmap=args.cmap)
    both = [r for r in rows if r["montage"]]
    pearson = [r["pearson"] for r in both if r["pearson"] is not None and np.isfinite(r["pearson"])]
    _say(f"compared {len(both)} images -> {os.path.join(args.out, 'compare.csv')}, montages in "
         f"{os.path.join(args.out, 'montage')}")
    if pearson:
        _say(f"  mean Pearson correlation of the BoW and network maps: {float(np.mean(pearson)):.3f}")
    if args.report:
        bow_maps = {i.key: i for i in iter_run(os.path.join(args.out, "bow"))}
        net_maps = {i.key: i for i in iter_run(os.path.join(args.out, "network"))}
        report_rows = []
        for row in both[:args.report_max]:
            maps = {"BoW": bow_maps[row["key"]].heatmap(), "network": net_maps[row["key"]].heatmap()}
            report_rows.append(ReportRow(row["key"], maps, image=maps["BoW"].image,
                                         info={"pearson": row["pearson"], "spearman": row["spearman"]}))
        table = [(r["key"], r["bow_target"], r["bow_score"], r["net_target"], r["net_score"], r["pearson"],
                  r["spearman"]) for r in rows]
        skipped = results["bow"].skipped + [s for s in results["network"].skipped
                                             if s not in results["bow"].skipped]
        write_report(args.report, report_rows, title="bowlrp compare: BoW vs network",
                     summary={"BoW model": args.bow_model, "network": args.net_model,
                              "images compared": len(both),
                              "mean Pearson": float(np.mean(pearson)) if pearson else "n/a"},
                     tables=[("Scores and agreement", ["key", "BoW target", "BoW score", "network target",
                                                       "network score", "Pearson", "Spearman"], table)],
                     skipped=skipped, cmap=args.cmap, overlay=args.overlay, shared_scale=args.shared_scale,
                     max_rows=args.report_max)
        _say(f"  report: {args.report}")
    for result in results.values():
        _report_skipped(result, args.strict)
    return EXIT_OK


# ---------------------------------------------------------------------- the parser
def _add_common(parser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--traceback", action="store_true", help="show the full Python traceback on errors")


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


def _add_batch_options(parser) -> None:
    parser.add_argument("-o", "--out", required=True, help="output folder (created; reruns resume in it)")
    group = parser.add_argument_group("scale")
    group.add_argument("--chunk-size", type=int, default=8, help="images per task (default 8)")
    group.add_argument("--batch-size", type=int, default=None,
                       help="images per model call within a task (default 1: every result is "
                            "independent of chunking, resuming and workers, bit for bit; larger can be "
                            "faster for big CNNs and agrees to rounding)")
    group.add_argument("-j", "--n-jobs", type=int, default=1,
                       help="parallel workers via joblib (-1 = all cores)")
    group.add_argument("--backend", default=None, help="joblib backend (loky, threading, dask, ...)")
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
    fmt = argparse.RawDescriptionHelpFormatter

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
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("fit", help="fit a BoW/SVM classifier on labelled images -> model file",
                       description="Fit a BoW/SVM classifier. TRAIN is a folder with one sub-folder of "
                                   "images per class, or a CSV file with columns path,label.",
                       epilog=_EPILOG, formatter_class=fmt)
    p.add_argument("train", metavar="TRAIN", help="folder of class sub-folders, or CSV path,label")
    p.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write (.joblib)")
    g = p.add_argument_group("BoW model")
    g.add_argument("--vocabulary-size", type=int, help="visual words per channel")
    g.add_argument("--kernel", help="linear, intersection, chi2, hellinger, exp_chi2, rbf")
    g.add_argument("--gamma", type=float, help="kernel width of exp_chi2 / rbf")
    g.add_argument("--C", dest="C", type=float, help="SVM regularisation")
    g.add_argument("--mapping", help="hard, rank or soft")
    g.add_argument("--p", type=float, help="p of the p-means pooling (inf = max pooling)")
    g.add_argument("--step", type=int, help="grid step of the dense features (pixels)")
    g.add_argument("--bin-sizes", type=lambda t: tuple(int(v) for v in t.split(",")),
                   help="SIFT bin sizes, e.g. 4 or 4,8 (one vocabulary each)")
    g.add_argument("--color", help="gray, opponent or rgb descriptors")
    g.add_argument("--backend", help="feature backend: numba or opencv")
    g.add_argument("--random-state", type=int, default=0, help="seed (default 0)")
    g.add_argument("-j", "--n-jobs", type=int, help="parallel feature extraction")
    g.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="any other BoWClassifier parameter (repeatable), e.g. --set rank_base=2.4")
    p.add_argument("--holdout", type=float, default=None, metavar="FRACTION",
                   help="keep this stratified fraction out of training and report accuracy on it")
    p.add_argument("--read-mode", default="auto", choices=["auto", "gray", "rgb"])
    p.add_argument("--strict", action="store_true", help="exit 1 if any training image had to be skipped")
    _add_common(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("explain", help="heatmaps of a model's decisions on images",
                       description="Explain the decisions of MODEL (a BoW model file, a nets .npz network or "
                                   "an .onnx network) on images. Writes heatmap PNGs, relevance NPZs, "
                                   "scores.csv and relevances.npz into --out; an interrupted run resumes.",
                       epilog=_EPILOG, formatter_class=fmt)
    p.add_argument("model", metavar="MODEL")
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="image files, folders or a CSV list")
    p.add_argument("--target", default=None,
                   help="class to explain: a label (BoW) or output index (network); default: predicted")
    _add_network_options(p)
    _add_batch_options(p)
    _add_common(p)
    p.set_defaults(func=cmd_explain)

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
    p.set_defaults(func=cmd_evaluate)

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
    p.set_defaults(func=cmd_compare)
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit code (also used by the ``bowlrp`` script)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with 2 on usage errors
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    prog = f"bowlrp {args.command}"
    try:
        return args.func(args)
    except UsageError as exc:
        _warn(f"{prog}: error: {exc}\n(see '{prog} --help')")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _warn(f"{prog}: interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # one readable line for every failure; --traceback for the details
        if getattr(args, "traceback", False):
            traceback.print_exc()
        known = isinstance(exc, (Failure, ValueError, OSError))
        message = str(exc) if known else f"{type(exc).__name__}: {exc}"
        _warn(f"{prog}: error: {message}")
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
