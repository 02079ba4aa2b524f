"""Training data: folder scan, deterministic patches, sharded order, per-sample degradation."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from realsr_cli.errors import ConfigError, UsageError
from realsr_cli.training.data import (
    HRPatches,
    PairedFolder,
    ShardSampler,
    degrade_batch,
    find_images,
    make_loader,
)
from realsr_cli.training.degradations import build_pipeline
from tests.training.test_trainer import make_images


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("hr")
    make_images(root / "a", n=3, size=24, seed=0)
    make_images(root / "b" / "c", n=2, size=30, seed=1)
    (root / "notes.txt").write_text("not an image")
    return root


def test_recursive_scan_skips_small_images_with_a_warning(hr_dir, caplog):
    assert len(find_images(hr_dir)) == 7  # 5 + 2 tiny, not the .txt
    with caplog.at_level(logging.WARNING, logger="realsr_cli.training.data"):
        ds = HRPatches(hr_dir, 16)
    assert len(ds) == 5 and all(p.name != "tiny.png" for p in ds.paths)
    assert "skipping 2 image(s) smaller than the patch" in caplog.text


def test_no_usable_image_and_too_small_are_usage_errors(hr_dir, tmp_path):
    with pytest.raises(UsageError, match="no usable training images"):
        HRPatches(hr_dir, 64)
    with pytest.raises(UsageError, match="min_size"):
        HRPatches(hr_dir, 16, min_size=9)  # the 8 px images are below min_size
    with pytest.raises(UsageError, match="not found"):
        HRPatches(tmp_path / "missing", 16)


def test_patches_are_a_function_of_seed_epoch_index(hr_dir):
    ds = HRPatches(hr_dir, 16, seed=3)
    a, b = ds[(0, 1)], ds[(0, 1)]
    assert a["hq"].shape == (3, 16, 16) and a["hq"].dtype == torch.float32
    assert torch.equal(a["hq"], b["hq"]) and a["key"].tolist() == [0, 1]
    others = [ds[(e, 1)]["hq"] for e in range(1, 6)] + [HRPatches(hr_dir, 16, seed=4)[(0, 1)]["hq"]]
    assert any(not torch.equal(a["hq"], o) for o in others)
    assert 0.0 <= float(a["hq"].min()) and float(a["hq"].max()) <= 1.0


def test_cached_images_give_the_same_patches(tmp_path):
    """``cache_images``: the same patches, bit for bit, for 8-bit RGB, gray and 16-bit files."""
    rng = np.random.default_rng(0)
    root = tmp_path / "hr"
    root.mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(root / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (33, 41), dtype=np.uint8)).save(root / "gray.png")
    Image.fromarray(rng.integers(0, 65536, (38, 34), dtype=np.uint16)).save(root / "deep.png")
    plain, cached = HRPatches(root, 16, seed=5), HRPatches(root, 16, seed=5, cache_images=True)
    for epoch in range(3):
        for i in range(len(plain)):
            a, b = plain[(epoch, i)]["hq"], cached[(epoch, i)]["hq"]
            assert a.shape == b.shape == (3, 16, 16) and torch.equal(a, b), (epoch, i)
    assert len(cached._cache) == len(plain)


def test_shards_cover_the_global_batch_and_resume_midway():
    single = ShardSampler(7, 4, seed=1)
    ranks = [ShardSampler(7, 4, seed=1, rank=r, world_size=2) for r in range(2)]
    for step in range(5):
        assert single.keys_for_step(step) == ranks[0].keys_for_step(step) + ranks[1].keys_for_step(step)
    # every epoch is a permutation of all images
    stream = [single.key(p) for p in range(14)]
    assert sorted(i for e, i in stream[:7]) == list(range(7)) and {e for e, _ in stream[7:]} == {1}
    # starting at step 3 continues the same stream
    it = iter(ShardSampler(7, 4, seed=1, start_step=3))
    assert [next(it) for _ in range(8)] == single.keys_for_step(3) + single.keys_for_step(4)
    with pytest.raises(ConfigError, match="divisible"):
        ShardSampler(7, 5, world_size=2)


def test_loader_with_workers_matches_single_process(hr_dir):
    ds = HRPatches(hr_dir, 16, seed=2)
    batches = []
    for workers in (0, 2):
        loader = make_loader(ds, ShardSampler(len(ds), 3, seed=2, start_step=1), num_workers=workers)
        it = iter(loader)
        batches.append([next(it) for _ in range(3)])
        del it, loader
    for x, y in zip(*batches, strict=True):
        assert torch.equal(x["hq"], y["hq"]) and torch.equal(x["key"], y["key"])
        assert x["hq"].shape == (3, 3, 16, 16)


def test_degradation_is_per_sample_and_independent_of_the_batch():
    pipeline = build_pipeline("bsrgan", 2)
    hq = torch.rand(3, 3, 16, 16)
    keys = torch.tensor([[0, 4], [0, 1], [1, 4]])
    lq = degrade_batch(pipeline, hq, keys, seed=5)
    assert lq.shape == (3, 3, 8, 8)
    alone = degrade_batch(pipeline, hq[1:2], keys[1:2], seed=5)
    assert torch.equal(lq[1:2], alone)
    assert not torch.equal(degrade_batch(pipeline, hq[:1], keys[:1], seed=6), lq[:1])
    assert degrade_batch(None, hq, keys, seed=5) is hq  # data.scale == 1


def test_paired_folder_matches_stems(tmp_path, caplog):
    lq, hq = tmp_path / "lq", tmp_path / "hq"
    lq.mkdir()
    hq.mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.full((4, 4, 3), 10, np.uint8)).save(lq / f"{name}.png")
        Image.fromarray(np.full((8, 8), 200, np.uint8)).save(hq / f"{name}.jpg")  # gray -> RGB
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(hq / "c.png")
    with caplog.at_level(logging.WARNING):
        ds = PairedFolder(lq, hq)
    assert len(ds) == 2 and "without a partner" in caplog.text
    stem, lq_t, hq_t = ds[1]
    assert stem == "b" and lq_t.shape == (3, 4, 4) and hq_t.shape == (3, 8, 8)
    assert len(PairedFolder(lq, hq, max_images=1)) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="no validation pairs"):
        PairedFolder(lq, empty)
    with pytest.raises(UsageError, match="validation needs sides >= 9"):
        PairedFolder(lq, hq, min_size=9)
