"""MaskSchedule: gamma(r) = 1 - sqrt(r), official re-mask counts, top-k re-masking, random masking."""

from __future__ import annotations

import math

import pytest
import torch

from realsr_cli.diffusion.masking import MASK_SCHEDULES, MaskSchedule


def _official_count(step: int, steps: int, n: int) -> int:
    """The official arithmetic: float32 gamma, times N, truncated."""
    ratio = 1 - torch.sqrt(torch.tensor([(step + 1) / steps]))
    return int((ratio * n).item())


def test_mask_ratio():
    s = MaskSchedule()
    assert s.mask_ratio(0.0) == 1.0 and s.mask_ratio(1.0) == 0.0
    assert s.mask_ratio(0.25) == pytest.approx(0.5)
    r = torch.linspace(0, 1, 11)
    assert torch.allclose(s.mask_ratio(r), 1 - r.sqrt())
    assert MaskSchedule(schedule="cosine").mask_ratio(1.0) == pytest.approx(0.0, abs=1e-7)
    assert set(MASK_SCHEDULES) >= {"sqrt", "cosine", "linear"}


def test_released_counts_t4():
    s = MaskSchedule(1024, mask_id=512).set_timesteps(4)
    assert s.masked_counts == (512, 299, 137, 0)
    assert [s.num_masked(i) for i in range(4)] == [512, 299, 137, 0]
    with pytest.raises(IndexError):
        s.num_masked(4)


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 8, 12, 16, 33])
@pytest.mark.parametrize("n", [1024, 256, 100])
def test_counts_match_official_arithmetic(steps, n):
    s = MaskSchedule(n).set_timesteps(steps)
    assert s.num_inference_steps == steps and len(s.masked_counts) == steps
    assert list(s.masked_counts[:-1]) == [_official_count(i, steps, n) for i in range(steps - 1)]
    assert s.masked_counts[-1] == 0
    assert all(a >= b for a, b in zip(s.masked_counts, s.masked_counts[1:], strict=False))
    # the rule of the brief: int((1 - sqrt((s+1)/T)) * N), up to float32 rounding at exact integers
    for i in range(steps - 1):
        assert abs(s.masked_counts[i] - int((1 - math.sqrt((i + 1) / steps)) * n)) <= 1


def test_errors():
    with pytest.raises(RuntimeError):
        MaskSchedule().num_masked(0)
    with pytest.raises(ValueError):
        MaskSchedule().set_timesteps(0)
    with pytest.raises(ValueError):
        MaskSchedule(schedule="exp")
    with pytest.raises(ValueError):
        MaskSchedule(0)


def test_step_remasks_largest_critic_logits():
    s = MaskSchedule(8, mask_id=99).set_timesteps(2)  # k_0 = int((1 - sqrt(1/2)) * 8) = 2
    assert s.masked_counts == (2, 0)
    ids = torch.arange(16).view(2, 8)
    scores = torch.tensor([[0.1, 0.9, -1, 0.3, 2.0, 0, 0, 0], [5, 4, 3, 2, 1, 0, -1, -2.0]])
    out = s.step(ids, scores[..., None], 0)
    assert out.tolist()[0] == [0, 99, 2, 3, 99, 5, 6, 7]
    assert out.tolist()[1] == [99, 99, 10, 11, 12, 13, 14, 15]
    assert ids.max() == 15  # input untouched
    assert s.step(ids, scores, 1) is ids  # last step: nothing masked
    assert torch.equal(s.is_masked(out), out == 99)
    with pytest.raises(ValueError):
        s.step(ids, scores[:, :4], 0)


def test_random_mask_counts_and_seed():
    s = MaskSchedule(64)
    a = s.random_mask(32, generator=torch.Generator().manual_seed(0))
    b = s.random_mask(32, generator=torch.Generator().manual_seed(0))
    assert a.dtype == torch.bool and a.shape == (32, 64) and torch.equal(a, b)
    # counts follow round(gamma(r) * N) >= 1 with r drawn first from the same generator
    r = torch.rand(32, generator=torch.Generator().manual_seed(0))
    expected = ((1 - r.sqrt()) * 64).round().clamp(min=1)
    assert torch.equal(a.sum(1).float(), expected)
    assert not torch.equal(a, s.random_mask(32, generator=torch.Generator().manual_seed(1)))


def test_add_noise():
    s = MaskSchedule(16, mask_id=512)
    ids = torch.randint(0, 512, (4, 16))
    x, mask = s.add_noise(ids, generator=torch.Generator().manual_seed(3))
    assert torch.equal(x[mask], torch.full_like(x[mask], 512))
    assert torch.equal(x[~mask], ids[~mask])
    assert (mask.sum(1) >= 1).all()
    with pytest.raises(ValueError):
        s.add_noise(ids[:, :8])
