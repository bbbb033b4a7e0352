"""What every ``bowlrp`` subcommand shares: exit codes, the two error kinds, messages, and
turning command-line text into models, adapters, targets and batch options.

The subcommands are in :mod:`bowlrp.app.cli_commands`, the preparation of a training set (reading,
skipping, holdout split) in :mod:`bowlrp.app.cli_training`, the parser in :mod:`bowlrp.app.cli`.
"""

from __future__ import annotations

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


def make_explainer(model, args, network_settings=None):
    from bowlrp.app.adapters import as_explainer

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
    from bowlrp.app.adapters import parse_target

    try:
        return parse_target(text, explainer.classes)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


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


# ---------------------------------------------------------------------- explain and compare
def batch_options(args) -> dict:
    if args.chunk_size < 1:
        raise UsageError(f"--chunk-size must be >= 1, got {args.chunk_size}")
    if args.limit is not None and args.limit < 0:
        raise UsageError(f"--limit must be >= 0, got {args.limit}")
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
        "progress": not args.quiet,
    }


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
