"""The demo runs anywhere: outside the checkout, next to Hugging Face's ``datasets``, and stops with a
clear message (not a strange AttributeError) when another package named ``nets`` shadows ours."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

import bowlrp
from bowlrp.app.nets_check import import_nets

REPO = pathlib.Path(bowlrp.__file__).resolve().parents[1]
SMALL = ["--n-train", "40", "--n-test", "10", "--n-show", "2", "--size", "32"]


def _run_demo(cwd, first_on_path, out="out"):
    """``python -m bowlrp demo`` in ``cwd`` with ``first_on_path`` before this checkout on sys.path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(first_on_path), str(REPO)]))
    return subprocess.run([sys.executable, "-m", "bowlrp", "demo", "--out", out, *SMALL], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _package(root, name, body):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(body)
    return folder


def test_demo_runs_outside_the_checkout_next_to_huggingface_datasets(tmp_path):
    # a Hugging Face-style `datasets` (no `synthetic` in it) first on the path, as in ML environments
    fake = tmp_path / "site"
    _package(fake, "datasets", '"""Hugging Face datasets stand-in."""\n\ndef load_dataset(name):\n'
                               '    raise RuntimeError("network access")\n')
    elsewhere = tmp_path / "elsewhere"  # no bowlrp checkout here or above
    elsewhere.mkdir()
    proc = _run_demo(elsewhere, fake)
    assert proc.returncode == 0, proc.stderr
    out = elsewhere / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["bow_max_conservation_error"]) <= 1e-9
    assert 0.0 <= summary["bow_test_accuracy"] <= 1.0
    assert Image.open(out / "montage.png").size[0] >= 4 * 128
    assert len(list(out.glob("scene*_bow.npz"))) == len(list(out.glob("scene*_net.npz"))) == 2
    # the first line says where the scenes are (in memory), not a folder that holds none of them
    first = proc.stdout.splitlines()[0]
    assert "generated 50 scenes" in first and "in memory" in first and "out/" not in first
    assert f"wrote {os.path.join('out', 'montage.png')}" in proc.stdout


def test_a_foreign_nets_package_fails_loudly(tmp_path):
    fake = tmp_path / "site"
    where = _package(fake, "nets", '"""An unrelated package that happens to be called nets."""\n')
    proc = _run_demo(tmp_path, fake)
    assert proc.returncode == 1
    assert "not bowlrp's network package" in proc.stderr and str(where) in proc.stderr
    assert "pip uninstall nets" in proc.stderr
    assert not (tmp_path / "out" / "montage.png").exists()


def test_import_nets_checks_the_marker(monkeypatch):
    import nets

    assert import_nets() is nets  # ours passes
    impostor = types.ModuleType("nets")
    impostor.__file__ = "/somewhere/site-packages/nets.py"
    monkeypatch.setitem(sys.modules, "nets", impostor)
    with pytest.raises(ImportError, match=r"found /somewhere/site-packages/nets\.py, which is not bowlrp"):
        import_nets()


def test_loading_a_network_file_checks_nets_too(monkeypatch, tmp_path):
    import nets
    from bowlrp.app.persist import load_model

    rng = np.random.default_rng(0)
    path = tmp_path / "net.npz"
    layers = [nets.Dense(rng.normal(size=(3, 2))), nets.ReLU(), nets.Dense(rng.normal(size=(2, 3)))]
    nets.Sequential(layers).save(path)
    monkeypatch.setitem(sys.modules, "nets", types.ModuleType("nets"))
    with pytest.raises(ImportError, match="shadows it"):
        load_model(path)
