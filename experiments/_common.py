"""What every experiment script shares: command line, output folder, results tables, figures."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

# the scripts run as files (python experiments/x.py): make the repository root importable for datasets/
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parser(description, default_out):
    """An argument parser with the options every experiment has."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--out",
        default=str(ROOT / "experiments" / "out" / default_out),
        help="output folder for figures and tables (created)",
    )
    p.add_argument("--quick", action="store_true", help="a small, fast run (what the tests use)")
    p.add_argument("--seed", type=int, default=0, help="random seed of data, models and metrics")
    return p


def prepare_out(path) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")  # a bare pipe would end the table cell


def markdown_table(rows, columns=None) -> str:
    """Rows (list of dicts) as a GitHub Markdown table."""
    if not rows:
        return "(no rows)\n"
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(_fmt(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_results(out, name, title, tables, meta, notes=""):
    """Write ``results.md`` and ``results.json``.

    ``tables`` maps a section title to a list of row dicts; ``meta`` holds settings and timings.
    """
    out = Path(out)
    meta = {
        **meta,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    md = [
        f"# {title}\n",
        notes.strip() + "\n" if notes else "",
        "## Settings\n",
        markdown_table([{"setting": k, "value": v} for k, v in meta.items()]),
    ]
    for section, rows in tables.items():
        md += [f"\n## {section}\n", markdown_table(rows)]
    (out / "results.md").write_text("\n".join(md))
    (out / "results.json").write_text(
        json.dumps(_jsonable({"experiment": name, "notes": notes, "meta": meta, "tables": tables}), indent=1)
    )
    return out / "results.md"


def save_curves(curves, path, title, normalize=False):
    """Plot perturbation curves to a PNG (matplotlib, headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bowlrp.evaluation import plot_perturbation_curves

    fig, ax = plt.subplots(figsize=(6, 4))
    plot_perturbation_curves(curves, ax=ax, normalize=normalize, title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bow_explain(clf, images, target=None):
    """Heatmaps of a fitted BoWClassifier (its ``explain`` method, or the module function it wraps)."""
    if hasattr(clf, "explain"):
        return clf.explain(images, target=target)
    from bowlrp.bow.decompose import explain_classifier

    return explain_classifier(clf, images, target=target)


def curve_rows(curves, extra=None):
    """One table row per perturbation curve."""
    rows = []
    for (method, order), c in curves.items():
        d = c.to_dict()
        rows.append(
            {
                **(extra or {}),
                "method": method,
                "order": order,
                "AOPC": d["aopc"],
                "AOPC s.e.m.": d["aopc_sem"],
                "f(x0)": float(c.mean_curve[0]),
                "f(x^L)": float(c.mean_curve[-1]),
                "L": d["n_steps"],
                "images": d["n_images"],
            }
        )
    return rows


class Clock:
    """Wall-clock timings of the named stages, for the settings table."""

    def __init__(self):
        self.times = {}
        self._t = time.perf_counter()

    def lap(self, name):
        now = time.perf_counter()
        self.times[f"time {name} (s)"] = round(now - self._t, 2)
        self._t = now
