"""DISTS (evaluation/dists.py): the metric's properties, an independent float64 re-computation,
strict key loading, and the registry path (cache only; missing weights, exit 3).

The VGG-16 here is random (seeded, full size: torchvision's 528 MB ImageNet file is not in the
test environment), and so are alpha and beta (seeded, positive, the published shapes; we do not
copy the published values into our tests). A one-off check against the ``DISTS_pytorch`` 0.1
package with the real alpha/beta and the same random VGG (not part of the suite: the package needs
torchvision) differed by at most 2.4e-5 over 12 pairs, all of it the package's float32 ``1 - sum``
cancellation (it gives -2.4e-5 for two identical 37x53 images): against a float64 re-computation
ours was within 1.1e-8, the package within 3.7e-6. Both are served to the registry as ``file://``
entries of an extra catalog (``$REALSR_WEIGHTS_TOML``) and downloaded into a temporary
``$REALSR_CACHE``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from realsr_cli.errors import EXIT_MODEL, UnknownModelError, UsageError, WeightsError
from realsr_cli.evaluation import dists
from realsr_cli.registry import hub
from realsr_cli.registry.catalog import load_catalog
from tests.evaluation.test_lpips import noisy, photo, random_vgg16

VGG_TEST_ID = "vgg16-diststest"
DISTS_TEST_ID = "dists-test"
STAGE_CHANNELS = (3, 64, 128, 256, 512, 512)


def dists_state_dict(seed: int = 1) -> dict[str, torch.Tensor]:
    """Seeded stand-ins for the published alpha and beta (same keys and shapes, positive; the
    metric's code path does not depend on their values)."""
    g = torch.Generator().manual_seed(seed)
    n = sum(STAGE_CHANNELS)
    return {"alpha": 0.05 + 0.1 * torch.rand(1, n, 1, 1, generator=g),
            "beta": 0.05 + 0.1 * torch.rand(1, n, 1, 1, generator=g)}


def reference_dists(x: torch.Tensor, y: torch.Tensor, vgg: dict, weights: dict) -> float:
    """DISTS written out layer by layer in float64 from the paper's definition (independent of
    engine.dists; the plain ``1 - sum`` form, covariance as E[xy] - E[x]E[y]): images (1,3,H,W)
    in [0,1]."""
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    hann = torch.tensor([0.5, 1.0, 0.5], dtype=torch.float64)
    window = (hann[:, None] * hann[None, :]) / (hann.sum() ** 2)

    def l2pool(h: torch.Tensor) -> torch.Tensor:
        c = h.shape[1]
        out = F.conv2d(h**2, window.expand(c, 1, 3, 3), stride=2, padding=1, groups=c)
        return torch.sqrt(out + 1e-12)

    def stages(img: torch.Tensor) -> list[torch.Tensor]:
        out = [img.double()]
        h = (img.double() - mean) / std
        for block in ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28)):
            if len(out) > 1:
                h = l2pool(h)
            for i in block:
                h = F.relu(F.conv2d(h, vgg[f"features.{i}.weight"].double(),
                                    vgg[f"features.{i}.bias"].double(), padding=1))
            out.append(h)
        return out

    alpha, beta = weights["alpha"].double().flatten(), weights["beta"].double().flatten()
    total_weight = alpha.sum() + beta.sum()
    similarity, start = 0.0, 0
    for a, b in zip(stages(x), stages(y), strict=True):
        c = a.shape[1]
        ma, mb = a.mean((2, 3)), b.mean((2, 3))
        va = (a**2).mean((2, 3)) - ma**2
        vb = (b**2).mean((2, 3)) - mb**2
        cov = (a * b).mean((2, 3)) - ma * mb
        texture = (2 * ma * mb + 1e-6) / (ma**2 + mb**2 + 1e-6)
        structure = (2 * cov + 1e-6) / (va + vb + 1e-6)
        wa, wb = alpha[start : start + c] / total_weight, beta[start : start + c] / total_weight
        similarity += float((wa * texture).sum() + (wb * structure).sum())
        start += c
    assert start == alpha.numel()
    return 1 - similarity


@pytest.fixture(scope="module")
def weights() -> tuple[dict, dict]:
    return random_vgg16(0), dists_state_dict()


@pytest.fixture(scope="module")
def net(weights) -> dists.DISTSNet:
    return dists.DISTSNet.from_state_dicts(*weights)


def serve_dists(tmp_path: Path, monkeypatch, *, download: bool = True, seed: int = 0,
                add_to_catalogs: bool = False):
    """Random VGG-16 + stand-in alpha/beta as ``vgg16-diststest`` / ``dists-test`` (file://
    entries of an extra catalog, hashes recorded), made the ids engine.dists loads; with
    ``download`` fetched into an isolated cache as `realsr models download` does. With
    ``add_to_catalogs`` the catalog joins those already in ``$REALSR_WEIGHTS_TOML`` (e.g. LPIPS's
    test entries) instead of replacing them. Returns the two state dicts."""
    from tests.registry.conftest import sha256, write_catalog

    vgg, weights = random_vgg16(seed), dists_state_dict()
    files = tmp_path / "published-dists"
    files.mkdir(exist_ok=True)
    torch.save(vgg, files / "vgg16-test.pth")
    torch.save(weights, files / "weights.pt")
    entries = []
    named = ((VGG_TEST_ID, "vgg16", "vgg16-test.pth"), (DISTS_TEST_ID, "dists", "weights.pt"))
    for entry_id, arch, name in named:
        path = files / name
        entries.append({"id": entry_id, "kind": "aux", "arch": arch, "format": "pth",
                        "source": {"url": path.as_uri()}, "sha256": sha256(path.read_bytes()),
                        "license": "MIT"})  # fmt: skip
    for var in ("HF_HUB_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("REALSR_CACHE", str(tmp_path / "realsr-cache"))
    catalog = str(write_catalog(tmp_path / "dists.toml", entries))
    existing = os.environ.get("REALSR_WEIGHTS_TOML") if add_to_catalogs else None
    monkeypatch.setenv("REALSR_WEIGHTS_TOML", os.pathsep.join(filter(None, [existing, catalog])))
    monkeypatch.setattr(dists, "VGG_ID", VGG_TEST_ID)
    monkeypatch.setattr(dists, "DISTS_ID", DISTS_TEST_ID)
    if download:
        for entry_id in (VGG_TEST_ID, DISTS_TEST_ID):
            hub.fetch(load_catalog().get(entry_id, allow_aux=True))
    return vgg, weights


# --------------------------------------------------------------------------- the metric


def test_stand_in_weights_have_the_published_shapes():
    w = dists_state_dict()
    assert sorted(w) == ["alpha", "beta"]
    assert all(tuple(v.shape) == (1, 1475, 1, 1) for v in w.values())
    assert sum(dists.CHANNELS) == 1475 and dists.CHANNELS == STAGE_CHANNELS


def test_l2_pooling():
    pool = dists.L2Pool(2)
    x = torch.rand(1, 2, 7, 10)
    out = pool(x)
    assert out.shape == (1, 2, 4, 5)  # ceil(n / 2)
    # a constant map stays constant away from the zero-padded border: sqrt(sum(g) c^2) = c
    assert torch.allclose(pool(torch.full((1, 2, 8, 8), 0.3))[..., 1:, 1:], torch.tensor(0.3))
    g = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
    expected = torch.sqrt((x[0, 1, 1:4, 3:6] ** 2 * g).sum() + 1e-12)  # output (1, 2)
    assert float(out[0, 1, 1, 2]) == pytest.approx(float(expected), rel=1e-6)


def test_identical_images_score_zero(net):
    img = photo()
    assert dists.dists(img, img, net) == pytest.approx(0.0, abs=1e-6)
    assert dists.dists(img[0], img[0].clone(), net, crop_border=4) == pytest.approx(0.0, abs=1e-6)


def test_symmetric_positive_and_below_one(net):
    a, b = photo(seed=1), noisy(photo(seed=1), 0.05)
    d_ab, d_ba = dists.dists(a, b, net), dists.dists(b, a, net)
    assert 0 < d_ab < 1 and d_ab == pytest.approx(d_ba, rel=1e-5, abs=1e-7)
    assert 0 < dists.dists(photo(seed=1), photo(seed=8), net) < 1  # two different crops


def test_larger_distortion_larger_score(net):
    img = photo(seed=2)
    scores = [dists.dists(noisy(img, s, seed=3), img, net) for s in (0.01, 0.05, 0.2)]
    assert scores[0] < scores[1] < scores[2]
    blur5 = F.avg_pool2d(F.pad(img, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    blur3 = F.avg_pool2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert dists.dists(blur5, img, net) > dists.dists(blur3, img, net) > 0


@pytest.mark.parametrize("size, seed", [((48, 64), 4), ((37, 53), 5)])  # odd sizes: ceil pooling
def test_matches_an_independent_float64_recomputation(weights, net, size, seed):
    vgg, w = weights
    x, y = photo(*size, seed=seed), noisy(photo(*size, seed=seed), 0.08, seed)
    y = torch.round(y * 255) / 255  # engine.dists quantises to 8 bits; the reference does not
    ref = reference_dists(x, y, vgg, w)
    assert 0 < ref < 1
    assert dists.dists(x, y, net) == pytest.approx(ref, rel=1e-5, abs=1e-7)
    # batched forward: one distance per pair
    batch = net(torch.cat([x, y]), torch.cat([y, y]))
    assert batch.shape == (2,) and abs(float(batch[1])) < 1e-6
    assert float(batch[0]) == pytest.approx(ref, rel=1e-5, abs=1e-7)


def test_weights_are_normalised_by_their_sum(weights):
    """alpha and beta enter divided by sum(alpha) + sum(beta): scaling both changes nothing."""
    vgg, w = weights
    scaled = dists.DISTSNet.from_state_dicts(vgg, {k: 7.0 * v for k, v in w.items()})
    x, y = photo(seed=9), noisy(photo(seed=9), 0.05, seed=9)
    plain = dists.DISTSNet.from_state_dicts(vgg, w)
    assert dists.dists(x, y, scaled) == pytest.approx(dists.dists(x, y, plain), rel=1e-5)


def test_crop_border_and_quantisation(net):
    x, y = photo(40, 40, seed=6), noisy(photo(40, 40, seed=6), 0.05, seed=6)
    q = torch.round(y * 255) / 255
    cropped = float(net(x[..., 3:-3, 3:-3].contiguous(), q[..., 3:-3, 3:-3].contiguous())[0])
    # float32 reductions over differently laid-out tensors: equal to ~1e-7
    assert dists.dists(x, y, net, crop_border=3) == pytest.approx(cropped, rel=1e-5, abs=1e-6)
    assert dists.dists(x, y, net) == dists.dists(x, q, net)


def test_size_errors(net):
    with pytest.raises(UsageError, match="differ in size"):
        dists.dists(photo(32, 32), photo(32, 40), net)
    with pytest.raises(UsageError, match="at least 16x16"):
        dists.dists(photo(20, 20), photo(20, 20), net, crop_border=4)  # 12x12 left


def test_strict_keys(weights):
    vgg, w = weights
    with pytest.raises(WeightsError, match="missing features.28.bias"):
        dists.DISTSNet.from_state_dicts({k: v for k, v in vgg.items() if k != "features.28.bias"},
                                        w)
    with pytest.raises(WeightsError, match="missing beta"):
        dists.DISTSNet.from_state_dicts(vgg, {"alpha": w["alpha"]})
    with pytest.raises(WeightsError, match="unexpected gamma"):
        dists.DISTSNet.from_state_dicts(vgg, {**w, "gamma": torch.ones(1, 1475, 1, 1)})
    with pytest.raises(WeightsError, match=r"alpha \(1, 1472, 1, 1\)"):
        dists.DISTSNet.from_state_dicts(vgg, {**w, "alpha": torch.ones(1, 1472, 1, 1)})
    net = dists.DISTSNet.from_state_dicts(vgg, w)  # the published keys, 1:1
    assert set(net.state_dict()) == {k for k in vgg if k.startswith("features.")} | set(w)
    assert not any(p.requires_grad for p in net.parameters()) and not net.training


# --------------------------------------------------------------------------- the registry


def test_shipped_catalog_entry():
    e = load_catalog().get(dists.DISTS_ID, allow_aux=True)
    assert e.id == "dists-vgg" and e.is_aux and e.arch == "dists" and e.format == "pth"
    assert e.license == "MIT"
    assert e.sha256 == "f5e65c96230b7f6ca995691647d482237e4cab8a50c5c4a5784f219ef0748218"
    assert e.source.url == ("https://raw.githubusercontent.com/dingkeyan93/DISTS/master/"
                            "DISTS_pytorch/weights.pt")
    vgg = load_catalog().get(dists.VGG_ID, allow_aux=True)
    assert vgg.is_aux and vgg.arch == "vgg16"
    with pytest.raises(UnknownModelError, match="DISTS metric's weights") as err:
        load_catalog().get(dists.DISTS_ID)  # never an SR model
    assert "--dists" in err.value.hint


def test_load_from_the_cache(tmp_path, monkeypatch):
    vgg, w = serve_dists(tmp_path, monkeypatch)
    loaded = dists.load_dists()
    expected = dists.DISTSNet.from_state_dicts(vgg, w)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.state_dict().items())
    x, y = photo(seed=7), noisy(photo(seed=7), 0.05)
    assert dists.dists(x, y, loaded) == dists.dists(x, y, expected)


def test_missing_weights_name_the_downloads(tmp_path, monkeypatch):
    serve_dists(tmp_path, monkeypatch, download=False)
    with pytest.raises(WeightsError) as err:
        dists.load_dists()
    assert err.value.exit_code == EXIT_MODEL == 3
    assert VGG_TEST_ID in err.value.message and DISTS_TEST_ID in err.value.message
    assert f"realsr models download {VGG_TEST_ID}" in err.value.hint
    assert f"realsr models download {DISTS_TEST_ID}" in err.value.hint
    assert not (tmp_path / "realsr-cache" / "downloads").exists()  # never downloads by itself
    hub.fetch(load_catalog().get(DISTS_TEST_ID, allow_aux=True))  # one of two
    with pytest.raises(WeightsError, match=f"cache: {VGG_TEST_ID}$"):
        dists.load_dists()


def test_wrong_arch_is_refused(tmp_path, monkeypatch):
    serve_dists(tmp_path, monkeypatch)
    with pytest.raises(UsageError, match=f"{VGG_TEST_ID} is not dists weights"):
        dists.load_dists(dists_id=VGG_TEST_ID)


def test_shipped_ids_without_cache(tmp_path, monkeypatch):
    """The real ids in an empty cache: the hint says to trust torchvision's VGG (no recorded
    hash)."""
    monkeypatch.setenv("REALSR_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("REALSR_WEIGHTS_TOML", raising=False)
    with pytest.raises(WeightsError) as err:
        dists.load_dists()
    assert "vgg16-imagenet, dists-vgg" in err.value.message
    assert "`realsr models download vgg16-imagenet --trust`" in err.value.hint
    assert "`realsr models download dists-vgg`" in err.value.hint


def test_engine_import_stays_light():
    import subprocess
    import sys

    code = ("import sys, realsr_cli.evaluation.dists, realsr_cli.evaluation.folders; "
            "bad = [m for m in ('typer', 'rich', 'realsr_cli.training', 'torchvision', "
            "'DISTS_pytorch') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
