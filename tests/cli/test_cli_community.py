"""`--weights` with community checkpoints (spandrel) and `realsr models inspect`, as a user runs them.

Checkpoints are tiny spandrel architectures built in-process (tests/registry/community_fixtures.py).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from realsr_cli.cli import _schemas
from realsr_cli.engine import io as rio
from tests.cli.conftest import run_cli
from tests.registry.community_fixtures import (
    compact,
    esrgan,
    malicious_pth,
    save,
    spandrel_or_skip,
    swinir,
)

INSPECT_KEYS = {
    "file", "sha256", "format", "loader", "arch", "arch_id", "arch_name", "purpose", "scale",
    "input_channels", "output_channels", "parameters", "size_requirements", "tiling", "default_tile",
    "default_overlap", "precision", "stochastic", "tags", "config", "metadata", "spandrel_version",
}


@pytest.fixture
def spandrel():
    return spandrel_or_skip()


def _png(path, w, h, seed=0):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path)
    return path


def _report(res) -> dict:
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    command = doc["schema"].removeprefix("realsr.").rsplit("/", 1)[0]
    assert _schemas.validate(doc, command) == []
    return doc


def test_upscale_with_an_esrgan_pth(tmp_path, spandrel):
    weights = save(esrgan(scale=2), tmp_path / "2x-tiny-esrgan.pth")
    src, dst = _png(tmp_path / "in.png", 30, 22), tmp_path / "out.png"
    report = _report(run_cli(["upscale", str(src), "--weights", str(weights), "-o", str(dst), "--json",
                              "--device", "cpu"]))
    assert report["arch"] == "spandrel:ESRGAN" and report["model"] == weights.name
    assert report["scale"] == 2 and report["output_size"] == [60, 44] and report["precision"] == "fp32"
    img = rio.read_image(dst)
    assert (img.width, img.height) == (60, 44) and 0.05 < img.pixels.std()  # texture, not a flat image
    assert "spandrel_arch" in json.dumps(img.text)


def test_tiled_matches_untiled_for_a_tileable_model(tmp_path, spandrel):
    # ESRGAN's receptive field is wider than the blending margin (overlap 16 -> 4 LR px), so seams
    # may differ by a rounding step; measured: mean 0.001, max 1 (of 255); overlap 4 gives 0.38 / 16
    weights = save(esrgan(scale=2), tmp_path / "e.safetensors")
    src = _png(tmp_path / "in.png", 44, 38, seed=3)
    outs = {}
    for tile in ("0", "24"):
        dst = tmp_path / f"t{tile}.png"
        report = _report(run_cli(["upscale", str(src), "--weights", str(weights), "-o", str(dst), "--json",
                                  "--tile", tile, "--tile-overlap", "16"]))
        assert (report["tiles"] > 1) == (tile != "0")
        outs[tile] = rio.read_image(dst).pixels
    diff = np.abs(outs["0"] - outs["24"])
    assert diff.mean() < 0.05 / 255 and diff.max() < 2.5 / 255, (diff.mean() * 255, diff.max() * 255)


def test_batch_with_a_compact_safetensors(tmp_path, spandrel):
    weights = save(compact(scale=4), tmp_path / "4x-compact.safetensors")
    _png(tmp_path / "in" / "a.png", 12, 10)
    _png(tmp_path / "in" / "b.png", 9, 14, seed=1)
    res = run_cli(["batch", str(tmp_path / "in"), str(tmp_path / "out"), "--weights", str(weights), "--json"])
    summary = _report(res)
    assert summary["done"] == 2 and not summary["failed"]
    assert {(im.width, im.height) for im in map(rio.read_image, sorted((tmp_path / "out").iterdir()))} == {
        (48, 40), (36, 56)}


def test_fp16_request_is_downgraded_for_a_model_without_fp16(tmp_path, spandrel):
    weights = save(swinir(scale=2), tmp_path / "swinir.pth")
    src = _png(tmp_path / "in.png", 20, 18)
    res = run_cli(["upscale", str(src), "--weights", str(weights), "-o", str(tmp_path / "o.png"), "--json",
                   "--precision", "fp16"])
    report = _report(res)
    assert report["precision"] == "fp32" and report["output_size"] == [40, 36]
    assert "does not support it" in res.stderr


def test_inspect_json_for_community_files(tmp_path, spandrel):
    esr = _report(run_cli(["models", "inspect", str(save(esrgan(scale=2), tmp_path / "e.pth")), "--json"]))
    doc = {k: v for k, v in esr.items() if k != "schema"}
    assert set(doc) == INSPECT_KEYS
    assert (doc["loader"], doc["format"], doc["arch"], doc["scale"]) == ("spandrel", "pickle", "spandrel:ESRGAN", 2)
    assert doc["tiling"] == "supported" and doc["precision"]["fp16"] and doc["input_channels"] == 3
    sw = _report(run_cli(["models", "inspect", str(save(swinir(), tmp_path / "s.safetensors")), "--json"]))
    assert (sw["format"], sw["arch_id"], sw["tiling"]) == ("safetensors", "SwinIR", "discouraged")
    assert sw["size_requirements"]["minimum"] == 16 and sw["precision"]["fp16"] is False
    res = run_cli(["models", "inspect", str(tmp_path / "e.pth")])  # the human view, on stderr
    assert res.code == 0 and res.stdout == b"" and "spandrel:ESRGAN" in res.stderr


def test_inspect_json_for_our_file(tmp_path, femasr_weights):
    doc = _report(run_cli(["models", "inspect", str(femasr_weights), "--json"]))
    doc = {k: v for k, v in doc.items() if k != "schema"}
    assert set(doc) == INSPECT_KEYS
    assert (doc["loader"], doc["arch"], doc["scale"], doc["spandrel_version"]) == ("realsr", "femasr", 4, None)
    assert doc["config"]["scale"] == 4 and doc["parameters"] > 0 and "source_sha256" in doc["metadata"]


@pytest.mark.parametrize("command", ["upscale", "inspect"])
def test_malicious_pth_is_refused_with_exit_3(tmp_path, command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    weights = malicious_pth(tmp_path / "4x-free-model.pth", marker)
    src = _png(tmp_path / "in.png", 8, 8)
    args = (["upscale", str(src), "--weights", str(weights)] if command == "upscale"
            else ["models", "inspect", str(weights)])
    res = run_cli(args)
    assert res.code == 3, res.stderr
    assert "refuses to unpickle" in res.stderr and "hint:" in res.stderr
    assert not marker.exists() and not (tmp_path / "in_x4.png").exists()


def test_without_the_extra_a_foreign_file_says_what_to_install(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    weights = tmp_path / "foreign.safetensors"
    save_file({"model.0.weight": torch.zeros(8, 3, 3, 3)}, str(weights))
    monkeypatch.setitem(sys.modules, "spandrel", None)  # `import spandrel` -> ImportError
    res = run_cli(["upscale", str(_png(tmp_path / "in.png", 8, 8)), "--weights", str(weights)])
    assert res.code == 3, res.stderr
    assert "spandrel extra, which is not installed" in res.stderr and "hint: pip install 'realsr" in res.stderr


def test_install_hint_keeps_its_brackets(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    weights = tmp_path / "foreign.safetensors"
    save_file({"model.0.weight": torch.zeros(8, 3, 3, 3)}, str(weights))
    monkeypatch.setitem(sys.modules, "spandrel", None)
    res = run_cli(["models", "inspect", str(weights)])
    assert res.code == 3 and "pip install 'realsr[community]'" in res.stderr
