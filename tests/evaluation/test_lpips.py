"""LPIPS-VGG v0.1 (evaluation/lpips.py): the metric's properties, an independent float64
re-computation, strict key loading, and the registry path (cache only; missing weights, exit 3).

The VGG-16 here is random (seeded, full size: torchvision's 528 MB ImageNet file is not in the
test environment), and so are the LPIPS linear layers (seeded, non-negative, the published
shapes; we do not copy the published values into our tests). A one-off check against the
``lpips`` 0.1.4 package with the real lin weights and the same random VGG agreed to 7.5e-9
(not part of the suite: the package needs torchvision). Both are served to the registry as
``file://`` entries of an extra catalog (``$REALSR_WEIGHTS_TOML``) and downloaded into a temporary
``$REALSR_CACHE``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from realsr_cli.engine import io
from realsr_cli.errors import EXIT_MODEL, UnknownModelError, UsageError, WeightsError
from realsr_cli.evaluation import lpips
from realsr_cli.registry import hub
from realsr_cli.registry.catalog import load_catalog
from tests.parity import shared_dir

LIN_CHANNELS = (64, 128, 256, 512, 512)
VGG_TEST_ID = "vgg16-lpipstest"
LIN_TEST_ID = "lpips-test"
#: torchvision VGG-16 ``features`` conv indices and their (in, out) channels, up to relu5_3
CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256),
         14: (256, 256), 17: (256, 512), 19: (512, 512), 21: (512, 512), 24: (512, 512),
         26: (512, 512), 28: (512, 512)}


def lin_state_dict(seed: int = 1) -> dict[str, torch.Tensor]:
    """Seeded stand-ins for the five published lin layers (same keys and shapes, non-negative
    like the published ones; the metric's code path does not depend on their values)."""
    g = torch.Generator().manual_seed(seed)
    return {
        f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) * 0.1
        for k, c in enumerate(LIN_CHANNELS)
    }


def random_vgg16(seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-layout VGG-16 state dict (``features.N.*`` + a classifier key) with He-scaled
    Gaussian weights from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for i, (cin, cout) in CONVS.items():
        he = (2 / (9 * cin)) ** 0.5
        sd[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * he
        sd[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.05
    sd["classifier.6.bias"] = torch.zeros(10)  # ignored, as torchvision's classifier is
    return sd


def reference_lpips(x: torch.Tensor, y: torch.Tensor, vgg: dict, lin: dict) -> float:
    """LPIPS written out layer by layer in float64 from the paper's Eq. 1 (independent of
    engine.lpips): images (1,3,H,W) in [0,1]."""
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)

    def taps(img: torch.Tensor) -> list[torch.Tensor]:
        h = ((img.double() * 2 - 1) - shift) / scale
        out = []
        for block in ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28)):
            if out:
                h = F.max_pool2d(h, 2)
            for i in block:
                h = F.relu(F.conv2d(h, vgg[f"features.{i}.weight"].double(),
                                    vgg[f"features.{i}.bias"].double(), padding=1))
            out.append(h)
        return out

    total = 0.0
    for k, (a, b) in enumerate(zip(taps(x), taps(y), strict=True)):
        na = a / (torch.linalg.vector_norm(a, dim=1, keepdim=True) + 1e-10)
        nb = b / (torch.linalg.vector_norm(b, dim=1, keepdim=True) + 1e-10)
        w = lin[f"lin{k}.model.1.weight"].double().view(1, -1, 1, 1)
        total += float(((na - nb) ** 2 * w).sum(1).mean())
    return total


@pytest.fixture(scope="module")
def weights() -> tuple[dict, dict]:
    return random_vgg16(0), lin_state_dict()


@pytest.fixture(scope="module")
def net(weights) -> lpips.LPIPSNet:
    return lpips.LPIPSNet.from_state_dicts(*weights)


def photo(h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    """(1,3,h,w) [0,1]: a crop of Set5 baby (8-bit levels)."""
    base = io.read_image(shared_dir() / "data" / "Set5" / "baby.png").pixels
    y, x = (seed * 61) % (512 - h), (seed * 97) % (512 - w)
    return torch.from_numpy(np.ascontiguousarray(base[y : y + h, x : x + w])).permute(2, 0, 1)[None]


def noisy(img: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (img + sigma * torch.randn(img.shape, generator=g)).clamp(0, 1)


def serve_lpips(tmp_path: Path, monkeypatch, *, download: bool = True, seed: int = 0):
    """Random VGG-16 + stand-in lin weights as ``vgg16-lpipstest`` / ``lpips-test`` (file://
    entries of an extra catalog, hashes recorded), made the ids engine.lpips loads; with
    ``download`` fetched into an isolated cache as `realsr models download` does. Returns the
    two state dicts."""
    from tests.registry.conftest import sha256, write_catalog

    vgg, lin = random_vgg16(seed), lin_state_dict()
    files = tmp_path / "published"
    files.mkdir(exist_ok=True)
    torch.save(vgg, files / "vgg16-test.pth")
    torch.save(lin, files / "vgg.pth")
    entries = []
    named = ((VGG_TEST_ID, "vgg16", "vgg16-test.pth"), (LIN_TEST_ID, "lpips", "vgg.pth"))
    for entry_id, arch, name in named:
        path = files / name
        entries.append({"id": entry_id, "kind": "aux", "arch": arch, "format": "pth",
                        "source": {"url": path.as_uri()}, "sha256": sha256(path.read_bytes()),
                        "license": "BSD"})  # fmt: skip
    for var in ("HF_HUB_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("REALSR_CACHE", str(tmp_path / "realsr-cache"))
    monkeypatch.setenv("REALSR_WEIGHTS_TOML", str(write_catalog(tmp_path / "lpips.toml", entries)))
    monkeypatch.setattr(lpips, "VGG_ID", VGG_TEST_ID)
    monkeypatch.setattr(lpips, "LIN_ID", LIN_TEST_ID)
    if download:
        catalog = load_catalog()
        for entry_id in (VGG_TEST_ID, LIN_TEST_ID):
            hub.fetch(catalog.get(entry_id, allow_aux=True))
    return vgg, lin


# --------------------------------------------------------------------------- the metric


def test_identical_images_score_zero(net):
    img = photo()
    assert lpips.lpips(img, img, net) == 0.0
    assert lpips.lpips(img[0], img[0].clone(), net, crop_border=4) == 0.0


def test_symmetric_and_positive(net):
    a, b = photo(seed=1), noisy(photo(seed=1), 0.05)
    d_ab, d_ba = lpips.lpips(a, b, net), lpips.lpips(b, a, net)
    assert d_ab > 0 and d_ab == pytest.approx(d_ba, rel=1e-6, abs=1e-9)


def test_larger_distortion_larger_score(net):
    img = photo(seed=2)
    scores = [lpips.lpips(noisy(img, s, seed=3), img, net) for s in (0.01, 0.05, 0.2)]
    assert scores[0] < scores[1] < scores[2]
    blurred = F.avg_pool2d(F.pad(img, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    assert lpips.lpips(blurred, img, net) > lpips.lpips(F.avg_pool2d(
        F.pad(img, (1, 1, 1, 1), mode="replicate"), 3, stride=1), img, net)


@pytest.mark.parametrize("size, seed", [((48, 64), 4), ((37, 53), 5)])  # odd sizes: floor pooling
def test_matches_an_independent_float64_recomputation(weights, net, size, seed):
    vgg, lin = weights
    x, y = photo(*size, seed=seed), noisy(photo(*size, seed=seed), 0.08, seed)
    y = torch.round(y * 255) / 255  # engine.lpips quantises to 8 bits; the reference does not
    ref = reference_lpips(x, y, vgg, lin)
    assert ref > 0
    assert lpips.lpips(x, y, net) == pytest.approx(ref, rel=2e-5)
    # batched forward: one distance per pair
    batch = net(torch.cat([x, y]), torch.cat([y, y]))
    assert batch.shape == (2,) and batch[1] == 0 and float(batch[0]) == pytest.approx(ref, rel=2e-5)


def test_crop_border_and_quantisation(net):
    x, y = photo(40, 40, seed=6), noisy(photo(40, 40, seed=6), 0.05, seed=6)
    q = torch.round(y * 255) / 255
    cropped = float(net(x[..., 3:-3, 3:-3].contiguous(), q[..., 3:-3, 3:-3].contiguous())[0])
    assert lpips.lpips(x, y, net, crop_border=3) == pytest.approx(cropped, rel=1e-6)
    assert lpips.lpips(x, y, net) == lpips.lpips(x, q, net)


def test_size_errors(net):
    with pytest.raises(UsageError, match="differ in size"):
        lpips.lpips(photo(32, 32), photo(32, 40), net)
    with pytest.raises(UsageError, match="at least 16x16"):
        lpips.lpips(photo(20, 20), photo(20, 20), net, crop_border=4)  # 12x12 left


def test_strict_keys(weights):
    vgg, lin = weights
    with pytest.raises(WeightsError, match="missing features.28.bias"):
        lpips.LPIPSNet.from_state_dicts({k: v for k, v in vgg.items() if k != "features.28.bias"},
                                        lin)
    with pytest.raises(WeightsError, match="missing lin4"):
        lpips.LPIPSNet.from_state_dicts(vgg, {k: v for k, v in lin.items() if "lin4" not in k})
    with pytest.raises(WeightsError, match="unexpected lin5"):
        lpips.LPIPSNet.from_state_dicts(vgg, {**lin, "lin5.model.1.weight": torch.ones(1, 8, 1, 1)})
    with pytest.raises(WeightsError, match=r"lin0.model.1.weight \(1, 32, 1, 1\)"):
        bad = {**lin, "lin0.model.1.weight": torch.ones(1, 32, 1, 1)}
        lpips.LPIPSNet.from_state_dicts(vgg, bad)
    net = lpips.LPIPSNet.from_state_dicts(vgg, lin)  # the published keys, 1:1
    assert set(net.state_dict()) == {k for k in vgg if k.startswith("features.")} | set(lin)
    assert not any(p.requires_grad for p in net.parameters()) and not net.training


# --------------------------------------------------------------------------- the registry


def test_shipped_catalog_entry():
    e = load_catalog().get(lpips.LIN_ID, allow_aux=True)
    assert e.is_aux and e.arch == "lpips" and e.format == "pth" and e.license == "BSD-2-Clause"
    assert e.sha256 == "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"
    assert e.source.url == ("https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/"
                            "master/lpips/weights/v0.1/vgg.pth")
    vgg = load_catalog().get(lpips.VGG_ID, allow_aux=True)
    assert vgg.is_aux and vgg.arch == "vgg16"
    with pytest.raises(UnknownModelError, match="LPIPS metric's weights"):
        load_catalog().get(lpips.LIN_ID)  # never an SR model


def test_load_from_the_cache(tmp_path, monkeypatch):
    vgg, lin = serve_lpips(tmp_path, monkeypatch)
    loaded = lpips.load_lpips()
    expected = lpips.LPIPSNet.from_state_dicts(vgg, lin)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.state_dict().items())
    x, y = photo(seed=7), noisy(photo(seed=7), 0.05)
    assert lpips.lpips(x, y, loaded) == lpips.lpips(x, y, expected)


def test_missing_weights_name_the_downloads(tmp_path, monkeypatch):
    serve_lpips(tmp_path, monkeypatch, download=False)
    with pytest.raises(WeightsError) as err:
        lpips.load_lpips()
    assert err.value.exit_code == EXIT_MODEL == 3
    assert VGG_TEST_ID in err.value.message and LIN_TEST_ID in err.value.message
    assert f"realsr models download {VGG_TEST_ID}" in err.value.hint
    assert f"realsr models download {LIN_TEST_ID}" in err.value.hint
    assert not (tmp_path / "realsr-cache" / "downloads").exists()  # never downloads by itself
    hub.fetch(load_catalog().get(LIN_TEST_ID, allow_aux=True))  # one of two
    with pytest.raises(WeightsError, match=f"cache: {VGG_TEST_ID}$"):
        lpips.load_lpips()


def test_shipped_ids_without_cache(tmp_path, monkeypatch):
    """The real ids in an empty cache: the hint says to trust torchvision's VGG (no recorded
    hash)."""
    monkeypatch.setenv("REALSR_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("REALSR_WEIGHTS_TOML", raising=False)
    with pytest.raises(WeightsError) as err:
        lpips.load_lpips()
    assert "vgg16-imagenet, lpips-vgg-v0.1" in err.value.message
    assert "`realsr models download vgg16-imagenet --trust`" in err.value.hint
    assert "`realsr models download lpips-vgg-v0.1`" in err.value.hint


def test_engine_import_stays_light():
    import subprocess
    import sys

    code = ("import sys, realsr_cli.evaluation.lpips, realsr_cli.evaluation.folders; "
            "bad = [m for m in ('typer', 'rich', 'realsr_cli.training', 'torchvision', 'lpips') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
