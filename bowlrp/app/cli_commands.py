"""The ``bowlrp`` subcommands: ``demo``, ``fit``, ``explain``, ``evaluate`` and ``compare``.

Each ``cmd_*`` takes the parsed arguments (see :func:`bowlrp.app.cli.build_parser`) and returns
an exit code, or raises :class:`~bowlrp.app.cli_common.UsageError` (exit 2) or
:class:`~bowlrp.app.cli_common.Failure` (exit 1); :func:`bowlrp.app.cli.main` turns those into
one line on stderr.
"""

from __future__ import annotations

import json
import os

from bowlrp.app.cli_common import (
    EXIT_OK,
    Failure,
    UsageError,
    batch_options,
    check_inputs,
    check_n_jobs,
    check_output_path,
    check_report_options,
    describe_work,
    file_digest,
    load_model_arg,
    make_explainer,
    parse_target_arg,
    report_skipped,
    run_batch,
    say,
    warn,
)
from bowlrp.app.cli_training import (
    check_holdout,
    check_params,
    fit_params,
    holdout_split,
    read_training_images,
    set_verbose,
    training_set,
)


# ---------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from bowlrp.app import demo

    # only the sizes given on the command line are passed: demo.run's own defaults stay the default
    sizes = {name: getattr(args, name) for name in ("n_train", "n_test", "n_show", "size", "random_state")
             if getattr(args, name) is not None}
    demo.run(args.out, **sizes)
    return EXIT_OK


# ---------------------------------------------------------------------- fit
def fit_model_class(name: str):
    """The estimator class of ``fit --model NAME``: ``bow`` (BoWClassifier) or ``cnn``
    (nets.train.ConvNetClassifier)."""
    if name == "cnn":
        from bowlrp.app.nets_check import import_nets

        import_nets()
        from nets.train import ConvNetClassifier

        return ConvNetClassifier
    from bowlrp.bow.classifier import BoWClassifier

    return BoWClassifier


def _fit_images(args, estimator_class, params, paths, labels):
    """Training images (and their labels) ready for the estimator, the skipped files, and a note
    on the input (the network's input shape)."""
    if args.model == "cnn":
        from bowlrp.app.network_training import network_training_array

        # every image is resized to the network's input: none is too small
        images, y, skipped = read_training_images(paths, labels, args.read_mode, 1, args.strict,
                                                  args.max_pixels)
        try:
            X, shape = network_training_array(images, args.image_size)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return X, y, skipped, {"input_shape": list(shape)}
    bins = params.get("bin_sizes", estimator_class().bin_sizes)
    support = 4 * max(bins if isinstance(bins, (tuple, list)) else (bins,))
    images, y, skipped = read_training_images(paths, labels, args.read_mode, support, args.strict,
                                              args.max_pixels)
    return images, y, skipped, {}


def cmd_fit(args) -> int:
    import contextlib
    import sys

    from bowlrp.app.persist import save_model

    estimator_class = fit_model_class(args.model)
    params = fit_params(args, estimator_class)
    check_params(estimator_class(**params))
    check_holdout(args.holdout)
    if args.max_pixels < 1:
        raise UsageError(f"--max-pixels must be >= 1, got {args.max_pixels}")
    check_output_path(args.output, "-o/--output")
    paths, labels = training_set(args.train)
    images, y, skipped, input_info = _fit_images(args, estimator_class, params, paths, labels)
    fit_images, fit_y, test_images, test_y = holdout_split(images, y, args.holdout, args.random_state)
    if args.model == "cnn":  # a network takes one array
        import numpy as np

        fit_images = np.stack(fit_images)
        test_images = None if test_images is None else np.stack(test_images)
    if not args.quiet:
        shape = f", input (C, H, W) {tuple(input_info['input_shape'])}" if input_info else ""
        warn(f"fit: {estimator_class.__name__} on {len(fit_y)} images, classes "
             f"{sorted(set(fit_y.tolist()))}, parameters {params}{shape}")
    # the estimator reports its long steps (features, vocabulary, SVM; epochs) on stderr while fitting;
    # the saved model is quiet, so that explaining with it does not log every image
    verbose = params.get("verbose", not args.quiet)
    with contextlib.redirect_stdout(sys.stderr):  # results go to stdout, progress to stderr
        clf = estimator_class(**{**params, "verbose": verbose}).fit(fit_images, fit_y)
    set_verbose(clf, params.get("verbose", False))
    save_model(clf, args.output)
    say(f"model saved to {args.output} (classes: {', '.join(map(str, clf.classes_))}; "
        f"{len(fit_y)} training images; {len(skipped)} skipped)")
    info = {"model": args.output, "model_type": args.model, "estimator": estimator_class.__name__,
            "classes": [str(c) for c in clf.classes_], "n_train": int(len(fit_y)), **input_info,
            "skipped": [[p, r] for p, r in skipped], "params": {k: repr(v) for k, v in params.items()},
            "train_accuracy": float(clf.score(fit_images, fit_y))}
    if test_images is not None:
        info["holdout_accuracy"] = float(clf.score(test_images, test_y))
        info["n_holdout"] = int(len(test_y))
        say(f"held-out accuracy: {info['holdout_accuracy']:.3f} on {len(test_y)} images")
    with open(args.output + ".json", "w", encoding="utf-8") as fh:
        json.dump(info, fh, indent=2)
    return EXIT_OK


# ---------------------------------------------------------------------- explain
def _true_labels(inputs, classes) -> dict:
    """path -> true class, where the inputs tell it: the label column of a CSV list, or a class
    sub-folder named like one of the model's ``classes`` (empty when the model has no class names)."""
    from bowlrp.imageio import list_images

    names = {str(c): c for c in classes or []}
    labels = {}
    for item in list_images(inputs):
        label = item.label if item.label is not None else os.path.basename(os.path.dirname(item.path))
        if str(label) in names:
            labels[item.path] = names[str(label)]
    return labels


def _run_rows(run_dir, max_rows, labels=None, predicted=False):
    """Report rows of an explain folder; with the true ``labels`` (path -> class) and ``predicted``
    (the maps explain the predicted class), each prediction is marked correct or wrong."""
    from bowlrp.app.report import ReportRow
    from bowlrp.app.runs import iter_run

    rows = []
    for item in iter_run(run_dir)[:max_rows]:
        heatmap = item.heatmap()
        method = heatmap.method or "relevance"
        rows.append(ReportRow(item.key, {method: heatmap}, info={"path": item.path},
                              label=(labels or {}).get(item.path),
                              predicted={method: heatmap.target} if predicted else {}))
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

    options = batch_options(args)
    check_inputs(args.inputs)
    model = load_model_arg(args.model, args.trust_pickle)
    explainer = make_explainer(model, args)
    target = parse_target_arg(explainer, args.target)
    result = run_batch(explainer, args.model, args.inputs, args.out, target, options)
    say(f"explained {result.ok} of {result.total} images ({describe_work(result)}) -> {args.out}")
    say(f"  scores: {result.scores_csv}\n  relevances: {result.relevances_npz}")
    if result.pending:
        say(f"  {result.pending} images still pending (--limit): rerun the same command to continue")
    if args.report:
        summary = {"model": args.model, "model kind": explainer.kind, "target": args.target or "predicted",
                   "images": result.total, "explained": result.ok, "skipped": len(result.skipped),
                   "pending": result.pending, "output folder": os.path.abspath(args.out)}
        tables, curves = _evaluation_parts(os.path.join(args.out, "evaluation", "evaluation.json"))
        rows = _run_rows(args.out, args.report_max, _true_labels(args.inputs, explainer.classes),
                         predicted=target is None)
        write_report(args.report, rows, title=f"bowlrp explain: {args.model}",
                     summary=summary, skipped=result.skipped, cmap=args.cmap, overlay=args.overlay,
                     tables=tables, curves=curves,
                     max_rows=args.report_max)
        say(f"  report: {args.report}")
    report_skipped(result, args.strict)
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

    check_report_options(args)
    check_n_jobs(args.n_jobs)
    if args.out is not None:
        check_output_path(args.out, "-o/--out")
    if not os.path.isdir(args.run):
        raise UsageError(f"{args.run!r} is not a folder (give the --out folder of 'bowlrp explain')")
    run = _run_settings(args.run)
    model = load_model_arg(args.model, args.trust_pickle)
    recorded = run.get("run_info", {}).get("model_sha256")
    if recorded and recorded != file_digest(args.model):
        raise Failure(f"{args.run} was explained with a different model file than {args.model}")
    described = run.get("explainer", {}) if isinstance(run.get("explainer"), dict) else {}
    network_settings = {k: described[k] for k in ("input_shape", "mean", "std", "composite", "batch_size")
                        if k in described}
    explainer = make_explainer(model, args, network_settings)
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
        say(f"AOPC {name}: {values['aopc']:.4g} (± {values['sem']:.2g})")
    loc = summary.get("localization")
    if loc:
        say(f"relevance mass accuracy {loc['mass_accuracy']:.3f}, rank accuracy {loc['rank_accuracy']:.3f}, "
             f"pointing game {loc['pointing_game']:.3f} "
             f"(chance {loc['chance']:.3f}, {loc['n_images']} images)")
    say(f"evaluation written to {out_dir}")
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
        say(f"  report: {args.report}")
    return EXIT_OK


def _read_csv_rows(path) -> dict:
    import csv

    from bowlrp.app.run_folder import csv_read

    with open(path, newline="", encoding="utf-8") as fh:
        return {csv_read(row["key"]): row for row in csv.DictReader(fh)}


# ---------------------------------------------------------------------- compare
def cmd_compare(args) -> int:
    import numpy as np

    from bowlrp.app.report import ReportRow, write_report
    from bowlrp.app.runs import compare_runs, iter_run

    options = batch_options(args)
    check_inputs(args.inputs)
    # the network options (--composite, --mean, ...) are for NET_MODEL only
    bow = make_explainer(load_model_arg(args.bow_model, args.trust_pickle), args, network_options=False)
    net = make_explainer(load_model_arg(args.net_model, args.trust_pickle), args)
    if bow.kind != "bow":
        raise UsageError(f"{args.bow_model} is not a BoW model (it is a {bow.kind})")
    if net.kind != "network":
        raise UsageError(f"{args.net_model} is not a network (it is a {net.kind} model)")
    targets = {"bow": parse_target_arg(bow, args.bow_target),
               "network": parse_target_arg(net, args.net_target)}
    results = {}
    for name, explainer, path in (("bow", bow, args.bow_model), ("network", net, args.net_model)):
        if not args.quiet:
            warn(f"compare: explaining with the {name} model")
        results[name] = run_batch(explainer, path, args.inputs, os.path.join(args.out, name),
                                   targets[name], options)
    rows = compare_runs(os.path.join(args.out, "bow"), os.path.join(args.out, "network"), args.out,
                        shared=args.shared_scale, cmap=args.cmap)
    both = [r for r in rows if r["montage"]]
    pearson = [r["pearson"] for r in both if r["pearson"] is not None and np.isfinite(r["pearson"])]
    say(f"compared {len(both)} images -> {os.path.join(args.out, 'compare.csv')}, montages in "
         f"{os.path.join(args.out, 'montage')}")
    if pearson:
        say(f"  mean Pearson correlation of the BoW and network maps: {float(np.mean(pearson)):.3f}")
    if args.report:
        bow_maps = {i.key: i for i in iter_run(os.path.join(args.out, "bow"))}
        net_maps = {i.key: i for i in iter_run(os.path.join(args.out, "network"))}
        labels = _true_labels(args.inputs, bow.classes)
        report_rows = []
        for row in both[:args.report_max]:
            maps = {"BoW": bow_maps[row["key"]].heatmap(), "network": net_maps[row["key"]].heatmap()}
            # a map of the predicted class names a prediction (a network's: if it has class names)
            predicted = {name: m.target for name, m, given in (("BoW", maps["BoW"], args.bow_target),
                                                                ("network", maps["network"], args.net_target))
                         if given is None and (name == "BoW" or net.classes is not None)}
            report_rows.append(ReportRow(row["key"], maps, image=maps["BoW"].image,
                                         info={"pearson": row["pearson"], "spearman": row["spearman"]},
                                         label=labels.get(bow_maps[row["key"]].path), predicted=predicted))
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
        say(f"  report: {args.report}")
    for result in results.values():
        report_skipped(result, args.strict)
    return EXIT_OK
