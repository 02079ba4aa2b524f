"""Losses with hand-computed values, the VGG extractor's torchvision layout, and the U-Net
discriminator (CPU, tiny tensors and nets)."""

from __future__ import annotations

import math

import pytest
import torch

from realsr_cli.errors import UsageError, WeightsError
from realsr_cli.training.discriminators import UNetDiscriminatorConfig, UNetDiscriminatorSN
from realsr_cli.training.losses import (
    PerceptualLoss,
    VGGFeatureExtractor,
    charbonnier_loss,
    esu_loss,
    fema_loss,
    gram_matrix,
    hinge_d_loss,
    hinge_g_loss,
    l1_loss,
    mse_loss,
    ud_loss,
    ud_weight,
    vgg_layer_names,
    vq_codebook_loss,
)


def vec(*values: float, requires_grad: bool = False) -> torch.Tensor:
    """A (1,C,1,1) feature map holding ``values`` along channels."""
    return torch.tensor(values).view(1, -1, 1, 1).requires_grad_(requires_grad)


# ----------------------------------------------------------------------------- pixel
def test_l1_mse_and_charbonnier_known_values():
    a, b = torch.full((2, 3, 4, 4), 0.75), torch.full((2, 3, 4, 4), 0.25)
    assert l1_loss(a, b).item() == pytest.approx(0.5)
    assert l1_loss(a, b, reduction="sum").item() == pytest.approx(0.5 * 96)
    assert l1_loss(a, b, reduction="none").shape == a.shape
    w = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
    assert l1_loss(a, b, weight=w).item() == pytest.approx(0.25)
    assert mse_loss(a, b).item() == pytest.approx(0.25)
    # 3-4-5: sqrt(0.3^2 + 0.4^2) = 0.5
    assert charbonnier_loss(
        torch.full((1, 1, 2, 2), 0.3), torch.zeros(1, 1, 2, 2), eps=0.4
    ).item() == pytest.approx(0.5)
    assert charbonnier_loss(a, a).item() == pytest.approx(1e-3)  # identical inputs give eps
    with pytest.raises(UsageError):
        l1_loss(a, b[:1])
    with pytest.raises(UsageError):
        l1_loss(a, b, reduction="max")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- gram / style
def test_gram_matrix_of_a_known_feature_map():
    feat = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C=2, H=1, W=2
    ffT = torch.tensor([[5.0, 11.0], [11.0, 25.0]])
    assert torch.allclose(gram_matrix(feat)[0], ffT / 4)  # / (C H W)
    assert torch.allclose(gram_matrix(feat, "hw")[0], ffT / 2)  # / (H W)
    assert gram_matrix(feat.half()).dtype == torch.float32


# ----------------------------------------------------------------------------- GAN
def test_hinge_losses_known_values():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # real: relu(1-2)=0, relu(1-0.5)=0.5 -> 0.25; fake: relu(1-2)=0, relu(1+0)=1 -> 0.5
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.75)
    assert hinge_g_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)
    maps = torch.zeros(2, 1, 4, 4)
    assert hinge_d_loss(maps + 1, maps - 1).item() == 0.0


# ----------------------------------------------------------------------------- VQ / FeMa
def test_codebook_commitment_loss_values_and_gradients():
    z_e = vec(1.0, 2.0, requires_grad=True)
    codes = vec(0.0, 0.0, requires_grad=True)
    loss = vq_codebook_loss(z_e, codes, beta=0.25)
    # ||sg[z_e] - e||^2 = (1 + 4) / 2 = 2.5 (mean), commitment the same times 0.25
    assert loss.item() == pytest.approx(2.5 + 0.25 * 2.5)
    loss.backward()
    assert torch.allclose(codes.grad.flatten(), torch.tensor([-1.0, -2.0]))  # d/de mean((e - z)^2)
    assert torch.allclose(z_e.grad.flatten(), 0.25 * torch.tensor([1.0, 2.0]))


def test_fema_loss_values_and_stop_gradient():
    z_lq = vec(1.0, 2.0, requires_grad=True)
    z_gt = vec(0.0, 0.0, requires_grad=True)
    # feature term mean((1, 2)^2) = 2.5; Gram (hw = 1) [[1,2],[2,4]] vs 0 -> mean(1,4,4,16) = 6.25
    loss = fema_loss(z_lq, z_gt, alpha=1.0, beta=0.25)
    assert loss.item() == pytest.approx(0.25 * 2.5 + 6.25)
    loss.backward()
    assert z_gt.grad is None and z_lq.grad is not None
    z = torch.randn(2, 8, 4, 4)
    assert fema_loss(z, z.clone()).item() == 0.0
    with pytest.raises(UsageError):
        fema_loss(z, z[:, :4])


# ----------------------------------------------------------------------------- uncertainty
def test_esu_loss_values_and_optimum():
    hq, sr = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)  # |error| = 1
    assert esu_loss(sr, hq, torch.zeros(1, 3, 2, 2)).item() == pytest.approx(1.0)
    s = torch.full((1, 1, 2, 2), math.log(2.0))  # shared over channels
    assert esu_loss(sr, hq, s).item() == pytest.approx(0.5 + 2 * math.log(2.0))
    assert esu_loss(hq, hq, s).item() == pytest.approx(2 * math.log(2.0))
    # minimum over s at exp(s) = |error| / 2
    s_opt = torch.full((1, 3, 2, 2), math.log(0.5), requires_grad=True)
    esu_loss(sr, hq, s_opt).backward()
    assert s_opt.grad.abs().max() < 1e-6
    with pytest.raises(UsageError):
        esu_loss(sr, hq, torch.zeros(1, 2, 2, 2))


def test_ud_loss_weights_per_image_and_detaches_uncertainty():
    theta = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    s = torch.stack([theta.log(), (theta + 1).log()]).unsqueeze(1).requires_grad_(True)  # (2,1,2,2)
    g = ud_weight(s)
    expected = (theta - 1).expand(2, 2, 2).unsqueeze(1)  # min subtracted per image
    assert torch.allclose(g, expected, atol=1e-6)
    sr = torch.zeros(2, 3, 2, 2, requires_grad=True)
    hq = torch.ones(2, 3, 2, 2)
    loss = ud_loss(sr, hq, s)
    assert loss.item() == pytest.approx((0 + 1 + 2 + 4) / 4)
    loss.backward()
    assert s.grad is None and sr.grad is not None
    assert ud_loss(hq, hq, s).item() == 0.0


# ----------------------------------------------------------------------------- VGG / perceptual
def test_vgg_layer_indices_match_torchvision():
    names16, names19 = vgg_layer_names("vgg16"), vgg_layer_names("vgg19")
    assert len(names16) == 31 and len(names19) == 37
    assert names16.index("conv5_3") == 28 and names16.index("pool5") == 30
    assert names19.index("conv1_2") == 2 and names19.index("conv3_4") == 16
    assert names19.index("conv4_4") == 25 and names19.index("conv5_4") == 34
    with pytest.raises(UsageError):
        VGGFeatureExtractor("vgg19", ("conv5_3x",))
    with pytest.raises(UsageError):
        VGGFeatureExtractor("vgg11")


def test_full_size_vgg19_state_dict_layout():
    net = VGGFeatureExtractor("vgg19", ("pool5",))
    sd = net.state_dict()
    convs = [i for i, n in enumerate(vgg_layer_names("vgg19")) if n.startswith("conv")]
    assert set(sd) == {f"features.{i}.{p}" for i in convs for p in ("weight", "bias")}
    assert sd["features.0.weight"].shape == (64, 3, 3, 3)
    assert sd["features.34.weight"].shape == (512, 512, 3, 3)
    # torchvision's vgg19().features has 20,024,384 parameters
    assert sum(v.numel() for v in sd.values()) == 20_024_384
    assert all(not p.requires_grad for p in net.parameters())


def small_loss(**kwargs) -> PerceptualLoss:
    torch.manual_seed(0)
    kwargs.setdefault("layer_weights", {"conv1_2": 0.5, "conv2_2": 1.0})
    return PerceptualLoss(base_width=4, **kwargs)


def test_perceptual_loss_refuses_random_weights():
    loss = small_loss()
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(WeightsError) as info:
        loss(x, x)
    assert info.value.hint and "allow_random_weights" in info.value.hint
    assert info.value.exit_code == 3


def test_perceptual_loss_values_and_gradients():
    loss = small_loss(allow_random_weights=True, style_weight=2.0)
    sr = torch.rand(2, 3, 16, 16, requires_grad=True)
    hq = torch.rand(2, 3, 16, 16, requires_grad=True)
    terms = loss(sr, hq)
    fs, fh = loss.vgg(sr), loss.vgg(hq)
    percep = (
        0.5 * (fs["conv1_2"] - fh["conv1_2"]).abs().mean()
        + (fs["conv2_2"] - fh["conv2_2"]).abs().mean()
    )
    style = sum(
        w * (gram_matrix(fs[n]) - gram_matrix(fh[n])).abs().mean()
        for n, w in loss.layer_weights.items()
    )
    assert terms.perceptual.item() == pytest.approx(percep.item(), rel=1e-5)
    assert terms.style.item() == pytest.approx(2.0 * style.item(), rel=1e-5)
    terms.total.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0 and hq.grad is None
    same = loss(hq.detach(), hq.detach())
    assert same.perceptual.item() == 0.0 and same.style.item() == 0.0
    mse = small_loss(allow_random_weights=True, criterion="mse")
    assert mse(sr, hq).style.item() == 0.0


def test_loading_torchvision_keys_marks_pretrained():
    loss = small_loss()
    donor = VGGFeatureExtractor("vgg19", ("conv2_2",), base_width=4)
    state = {f"features.{k}": v.clone() for k, v in donor.features.state_dict().items()}
    state["features.34.weight"] = torch.zeros(1)  # deeper layers past the cut are ignored
    state["classifier.0.weight"] = torch.zeros(1)  # and so is the classifier
    loss.load_torchvision_state_dict(state)
    assert loss.vgg.pretrained
    assert torch.equal(loss.vgg.features[2].weight, donor.features[2].weight)
    x = torch.rand(1, 3, 16, 16)
    assert loss(x, x).perceptual.item() == 0.0  # runs without allow_random_weights

    fresh = small_loss()
    with pytest.raises(WeightsError, match="missing"):
        fresh.load_torchvision_state_dict(
            {k: v for k, v in state.items() if k != "features.0.bias"}
        )
    with pytest.raises(WeightsError, match="unexpected"):
        fresh.load_torchvision_state_dict({**state, "model.fc.weight": torch.zeros(1)})
    wide = {
        k: torch.zeros(64, 3, 3, 3) if k == "features.0.weight" else v for k, v in state.items()
    }
    with pytest.raises(WeightsError, match="shape"):
        fresh.load_torchvision_state_dict(wide)
    assert not fresh.vgg.pretrained


# ----------------------------------------------------------------------------- discriminator
@pytest.mark.parametrize("size", [(32, 32), (37, 29)])
def test_unet_discriminator_shape_and_gradients(size):
    torch.manual_seed(0)
    d = UNetDiscriminatorSN(UNetDiscriminatorConfig(num_feat=8))
    x = torch.rand(2, 3, *size, requires_grad=True)
    out = d(x)
    assert out.shape == (2, 1, *size)
    hinge_g_loss(out).backward()
    assert x.grad is not None and d.conv1.weight_orig.grad is not None


def test_unet_discriminator_spectral_norm_and_keys():
    d = UNetDiscriminatorSN(UNetDiscriminatorConfig(num_feat=4, skip_connection=False))
    sd = d.state_dict()
    for i in range(1, 9):
        assert {f"conv{i}.weight_orig", f"conv{i}.weight_u", f"conv{i}.weight_v"} <= set(sd)
        assert f"conv{i}.bias" not in sd
    for i in (0, 9):
        assert {f"conv{i}.weight", f"conv{i}.bias"} <= set(sd)
        assert f"conv{i}.weight_orig" not in sd
    assert sd["conv3.weight_orig"].shape == (32, 16, 4, 4)
    assert sd["conv9.weight"].shape == (1, 4, 3, 3)
    # spectral norm keeps the largest singular value of the used weight near 1
    d.train()
    for _ in range(20):
        d(torch.rand(1, 3, 16, 16))
    sigma = torch.linalg.matrix_norm(d.conv4.weight.detach().flatten(1), ord=2)
    assert sigma.item() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(UsageError):
        d(torch.rand(1, 3, 4, 4))
