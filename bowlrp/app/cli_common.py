"""What every ``bowlrp`` subcommand shares: exit codes, the two error kinds, messages, and
turning command-line text into models, adapters, targets and batch options.

The subcommands are in :mod:`bowlrp.app.cli_commands`, the preparation of a training set (reading,
skipping, holdout split) in :mod:`bowlrp.app.cli_training`, the parser in :mod:`bowlrp.app.cli`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """The command line is wrong (exit code 2)."""


class Failure(Exception):
    """The command ran but could not do its job (exit code 1)."""


# ---------------------------------------------------------------------- small helpers
def say(text: str) -> None:
    print(text, flush=True)


def warn(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parse_floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{name} must be numbers separated by commas, got {text!r}") from None


def parse_input_shape(text):
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise UsageError(f"--input-shape must be C,H,W (e.g. 1,28,28), got {text!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise UsageError(f"--input-shape must be three positive integers C,H,W, got {text!r}")
    return shape


def check_inputs(paths) -> None:
    for path in paths:
        if not os.path.exists(path):
            raise UsageError(f"input {path!r} does not exist")


def load_model_arg(path: str, trusted: bool = False):
    """The model in ``path``; pickle/joblib files only with ``trusted`` (--trust-pickle)."""
    from bowlrp.app.persist import UntrustedModelError, load_model

    if not os.path.exists(path):
        raise UsageError(f"model file {path!r} does not exist")
    try:
        return load_model(path, trusted=trusted)
    except UntrustedModelError as exc:
        raise Failure(f"{exc} (the option is --trust-pickle)") from None
    except ImportError as exc:  # e.g. .onnx without the onnx extra
        raise Failure(f"cannot load {path}: {exc} (install bowlrp[onnx] for ONNX models)") from exc


_NETWORK_FLAGS = {"composite": "--composite", "input_shape": "--input-shape", "mean": "--mean",
                  "std": "--std"}


def make_explainer(model, args, network_settings=None, network_options=True):
    """The adapter of ``model`` with the command line's settings. Network options given for a BoW
    model are a usage error (they would be silently ignored); ``network_options=False`` leaves them
    out (``compare`` gives them to its network only)."""
    from bowlrp.app.adapters import as_explainer
    from bowlrp.app.persist import model_kind

    given = [flag for dest, flag in _NETWORK_FLAGS.items() if getattr(args, dest, None) is not None]
    if not network_options:
        args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in _NETWORK_FLAGS})
    elif given and model_kind(model) == "bow":
        raise UsageError(f"{', '.join(given)} apply to network models only; this is a BoW model")
    settings = dict(network_settings or {})
    if getattr(args, "input_shape", None) is not None:
        settings["input_shape"] = parse_input_shape(args.input_shape)
    if getattr(args, "mean", None) is not None:
        settings["mean"] = parse_floats(args.mean, "--mean")
    if getattr(args, "std", None) is not None:
        settings["std"] = parse_floats(args.std, "--std")
    if getattr(args, "batch_size", None) is not None:
        settings["batch_size"] = args.batch_size
    composite = getattr(args, "composite", None) or settings.pop("composite", "auto")
    settings.pop("composite", None)
    try:
        return as_explainer(model, composite=composite, **settings)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def parse_target_arg(explainer, text):
    """The target the command line names, checked against the model now (not per image)."""
    from bowlrp.app.adapters import parse_target

    try:
        target = parse_target(text, explainer.classes)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    n_outputs = getattr(explainer, "n_outputs", None)
    if target is not None and explainer.classes is None and n_outputs is not None \
            and not -n_outputs <= target < n_outputs:
        raise UsageError(f"--target {target} is out of range: the network has {n_outputs} outputs "
                         f"(0..{n_outputs - 1})")
    return target


def report_skipped(result, strict: bool) -> None:
    if result.skipped:
        warn(f"skipped {len(result.skipped)} of {result.total} inputs:")
        for _key, path, reason in result.skipped[:20]:
            warn(f"  {path}: {reason}")
        if len(result.skipped) > 20:
            warn(f"  ... and {len(result.skipped) - 20} more (see scores.csv)")
    if result.ok == 0:
        raise Failure("no image could be explained")
    if strict and result.skipped:
        raise Failure(f"{len(result.skipped)} inputs were skipped (--strict)")


# ---------------------------------------------------------------------- checked before any work
def check_output_path(path, flag: str) -> None:
    """A usage error when ``path`` (a folder or file to write) cannot be created because it, or one
    of the folders above it, is an existing file."""
    target = os.path.abspath(path)
    if flag == "-o/--out" and os.path.isfile(target):
        raise UsageError(f"{flag} {path!r} is a file, not a folder")
    parent = os.path.dirname(target) if flag != "-o/--out" else target
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise UsageError(f"cannot create {flag} {path!r}: {parent!r} is a file, not a folder")


def check_n_jobs(n_jobs) -> None:
    if n_jobs is not None and n_jobs == 0:
        raise UsageError("-j/--n-jobs must be a positive number of workers or negative (-1 = all cores), "
                         "got 0")


def check_report_options(args) -> None:
    """--report-max >= 0 and a --report page that can be written, before any work starts."""
    if getattr(args, "report_max", 0) < 0:
        raise UsageError(f"--report-max must be >= 0, got {args.report_max}")
    if getattr(args, "report", None):
        check_output_path(args.report, "--report")


# ---------------------------------------------------------------------- explain and compare
def batch_options(args) -> dict:
    """The options of an explain-like run, every one checked before a model or image is read."""
    if args.chunk_size < 1:
        raise UsageError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    if args.limit is not None and args.limit < 0:
        raise UsageError(f"--limit must be >= 0, got {args.limit}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_pixels is not None and args.max_pixels < 1:
        raise UsageError(f"--max-pixels must be >= 1, got {args.max_pixels}")
    check_n_jobs(args.n_jobs)
    check_output_path(args.out, "-o/--out")
    check_report_options(args)
    return {
        "chunk_size": args.chunk_size,
        "n_jobs": args.n_jobs,
        "backend": args.parallel_backend,
        "scheduler": args.scheduler,
        "limit": args.limit,
        "resume": not args.overwrite,
        "png": not args.no_png,
        "cmap": args.cmap,
        "overlay": args.overlay,
        "read_mode": args.read_mode,
        "max_pixels": args.max_pixels,
        "progress": not args.quiet,
    }


def describe_work(result) -> str:
    """What a (resumed) run computed: new images, and earlier results redone and why."""
    text = f"{result.new} new"
    if result.changed:
        text += f"; {result.changed} explained again because the input file changed"
    if result.damaged:
        text += f"; {result.damaged} explained again because their result files were damaged"
    return text


def run_batch(explainer, model_path, inputs, out_dir, target, options):
    from bowlrp.app.batch import RunMismatchError, explain_batch
    from bowlrp.imageio import list_images

    try:
        items = list_images(inputs)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    run_info = {"model_sha256": file_digest(model_path)}
    try:
        return explain_batch(explainer, items, out_dir, target=target, run_info=run_info, **options)
    except RunMismatchError as exc:
        raise UsageError(exc.advice("--overwrite")) from None
