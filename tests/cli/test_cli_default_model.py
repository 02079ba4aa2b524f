"""The README's first command: `realsr upscale docs/examples/astronaut-lq.png -o out.png` with no
--model, offline, on an empty cache, runs the embedded default model shipped in the package
(bicres-x4); `--model ugtsr` still means our UGTSR; `--model ssr` runs SSR's shipped CPU demo
weights the same way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.cli.conftest import run_cli

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "astronaut-lq.png"


def test_first_run_offline_uses_the_embedded_model(tmp_path, monkeypatch):
    monkeypatch.setenv("REALSR_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("REALSR_WEIGHTS_TOML", raising=False)
    out = tmp_path / "astronaut_x4.png"
    res = run_cli(["upscale", str(EXAMPLE), "-o", str(out), "--offline", "--device", "cpu", "--json"])
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert (report["model"], report["arch"], report["output_size"]) == ("bicres-x4", "bicres", [512, 512])
    assert not (tmp_path / "empty-cache").exists() or not any((tmp_path / "empty-cache").rglob("*.safetensors"))
    sr = np.asarray(Image.open(out).convert("RGB"), dtype=np.float64)
    lq = np.asarray(Image.open(EXAMPLE).convert("RGB"), dtype=np.float64)
    # the x4 result, box-downscaled, stays close to its input (a trained model, not noise) ...
    down = sr.reshape(128, 4, 128, 4, 3).mean(axis=(1, 3))
    assert np.abs(down - lq).mean() < 12.0
    # ... it is not bicubic (the residual did something), and it is smoother than the noisy input
    # magnified (it removes some of the Real-ESRGAN noise and blocking)
    bic = np.asarray(Image.open(EXAMPLE).convert("RGB").resize((512, 512), Image.BICUBIC), dtype=np.float64)
    assert np.abs(sr - bic).mean() > 0.5
    assert np.abs(np.diff(sr, axis=1)).mean() < np.abs(np.diff(bic, axis=1)).mean()


def test_model_ugtsr_still_resolves_to_our_ugtsr(monkeypatch):
    from realsr_cli.registry.catalog import load_catalog

    monkeypatch.delenv("REALSR_WEIGHTS_TOML", raising=False)
    catalog = load_catalog()
    assert catalog.get("ugtsr").id == "ugtsr-x4-cpu" and catalog.default().id == "bicres-x4"


def test_model_ssr_runs_the_shipped_cpu_demo_weights_offline(tmp_path, monkeypatch):
    """`--model ssr` resolves to the packaged ssr-x4-cpu (demo quality) on an empty cache; the
    sampler is seeded, so two runs with one seed are identical, and the x4 result is an image
    of the input (box-downscaled close to it), not noise."""
    monkeypatch.setenv("REALSR_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("REALSR_WEIGHTS_TOML", raising=False)
    lq = Image.open(EXAMPLE).convert("RGB").crop((32, 32, 96, 96))
    src = tmp_path / "crop.png"
    lq.save(src)
    outs = []
    for name in ("a.png", "b.png"):
        out = tmp_path / name
        res = run_cli(["upscale", str(src), "-o", str(out), "--model", "ssr", "--seed", "3",
                       "--offline", "--device", "cpu", "--json"])
        assert res.code == 0, res.stderr
        report = json.loads(res.stdout)
        assert (report["model"], report["arch"], report["output_size"]) == ("ssr-x4-cpu", "ssr", [256, 256])
        outs.append(np.asarray(Image.open(out).convert("RGB"), dtype=np.float64))
    assert np.array_equal(outs[0], outs[1])
    down = outs[0].reshape(64, 4, 64, 4, 3).mean(axis=(1, 3))
    assert np.abs(down - np.asarray(lq, dtype=np.float64)).mean() < 15.0
