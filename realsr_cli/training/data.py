"""Training data: HR folder -> random patches -> (on the device) synthetic degradation.

Every random choice is a pure function of ``(run.seed, epoch, image index)``, never of a worker,
a rank or a stateful generator, so that

* resuming at step ``k`` replays exactly the batches an uninterrupted run would have seen
  (the only data state is the step), with any number of DataLoader workers, and
* a global batch is the same set of patches and LR images for 1 process or N DDP ranks.

Order: the images form an endless stream of epochs, each a permutation seeded by
``(seed, epoch)``. Global batch ``t`` is stream items ``[t*B, (t+1)*B)``; rank ``r`` of ``W`` takes
the contiguous slice ``[r*B/W, (r+1)*B/W)`` of it (:class:`ShardSampler`). Items are
``(epoch, index)`` keys; :class:`HRPatches` turns a key into an HR patch (random crop, flips,
rot90) and :func:`degrade_batch` into its LR version with a CPU generator seeded from the same key
(Real-ESRGAN/BSRGAN choices that the papers draw once per batch are thereby drawn per image).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from realsr_cli.engine.device import make_generator
from realsr_cli.engine.io import is_image_path, read_image
from realsr_cli.errors import ConfigError, UsageError

log = logging.getLogger(__name__)

__all__ = [
    "HRPatches",
    "PairedFolder",
    "ShardSampler",
    "degrade_batch",
    "find_images",
    "image_to_tensor",
    "local_batch_size",
    "make_loader",
    "sample_seed",
]

# stream tags: independent random streams derived from the same key
_ORDER, _CROP, _DEGRADE = 0, 1, 2


def sample_seed(*entropy: int) -> int:
    """A 64-bit seed that is a pure function of the non-negative integers ``entropy``."""
    return int(np.random.SeedSequence([int(e) for e in entropy]).generate_state(1, np.uint64)[0])


def find_images(root: str | Path) -> list[Path]:
    """Image files under ``root`` (recursive), sorted by relative path for a stable order."""
    base = Path(root)
    if not base.is_dir():
        raise UsageError(f"data folder not found: {base}", hint="pass --data HR_DIR (a folder of images)")
    return sorted((p for p in base.rglob("*") if p.is_file() and is_image_path(p)),
                  key=lambda p: p.relative_to(base).as_posix())


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header only, or None when Pillow cannot read it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # unreadable, truncated header, decompression-bomb guard ...
        return None


def _rgb_pixels(path: str | Path) -> tuple[np.ndarray, int]:
    """(H,W,3) float32 pixels in [0,1] of an image file (gray -> RGB, alpha dropped), bit depth."""
    img = read_image(path, max_pixels=None)
    pixels = np.repeat(img.pixels, 3, axis=2) if img.pixels.shape[2] == 1 else img.pixels
    return pixels, img.bit_depth


def image_to_tensor(path: str | Path) -> Tensor:
    """Decode an image file into (3,H,W) float32 in [0,1] (gray -> RGB, alpha dropped)."""
    pixels, _ = _rgb_pixels(path)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def _stored_pixels(path: Path) -> np.ndarray:
    """(H,W,3) uint8 (8-bit files) or uint16 (16-bit files) of an image, for the patch cache."""
    pixels, bit_depth = _rgb_pixels(path)
    peak = 255.0 if bit_depth == 8 else 65535.0
    return np.rint(pixels * peak).astype(np.uint8 if bit_depth == 8 else np.uint16)


class HRPatches(Dataset):
    """Random HR patches: ``dataset[(epoch, index)] -> {"hq": (3,P,P), "key": (2,) int64}``.

    ``hq`` is float32 in [0,1]; ``key`` is ``(epoch, index)``, which also seeds the degradation.
    Images with a side below ``patch_size`` are skipped with one warning; a side below
    ``min_size`` or no usable image at all is a :class:`UsageError`.
    """

    def __init__(
        self,
        root: str | Path,
        patch_size: int,
        *,
        seed: int = 0,
        flip: bool = True,
        rot90: bool = True,
        min_size: int = 8,
        cache_images: bool = False,
    ) -> None:
        self.root = Path(root)
        self.cache_images = cache_images
        self._cache: dict[int, np.ndarray] = {}
        self.patch_size = patch_size
        self.seed = seed
        self.flip = flip
        self.rot90 = rot90
        self.paths: list[Path] = []
        small: list[str] = []
        unreadable: list[str] = []
        for path in find_images(self.root):
            size = _image_size(path)
            if size is None:
                unreadable.append(path.name)
            elif min(size) < min_size:
                raise UsageError(
                    f"{path}: {size[0]}x{size[1]} is below data.min_size={min_size}",
                    hint="remove the file (corrupt or thumbnail?) or lower data.min_size",
                )
            elif min(size) < patch_size:
                small.append(path.name)
            else:
                self.paths.append(path)
        for what, names in (("smaller than the patch", small), ("unreadable", unreadable)):
            if names:
                shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
                log.warning("skipping %d image(s) %s (%d px): %s", len(names), what, patch_size, shown)
        if not self.paths:
            raise UsageError(
                f"no usable training images in {self.root} (need a side >= {patch_size} px; "
                f"{len(small)} too small, {len(unreadable)} unreadable)",
                hint="check --data, or lower data.patch_size",
            )

    def __len__(self) -> int:
        return len(self.paths)

    def _crop(self, index: int, rng: np.random.Generator) -> Tensor:
        """A random (3,P,P) float32 crop in [0,1] of image ``index`` (cropped before conversion:
        from the cached 8/16-bit pixels with ``cache_images``, else from the decoded file)."""
        if self.cache_images:
            src = self._cache.get(index)
            if src is None:
                src = self._cache.setdefault(index, _stored_pixels(self.paths[index]))
        else:
            src, _ = _rgb_pixels(self.paths[index])
        p = self.patch_size
        h, w = src.shape[:2]
        top, left = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        crop = src[top : top + p, left : left + p].astype(np.float32)
        if src.dtype != np.float32:
            crop /= 255.0 if src.dtype == np.uint8 else 65535.0
        return torch.from_numpy(crop.transpose(2, 0, 1).copy())

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        epoch, index = int(key[0]), int(key[1])
        rng = np.random.default_rng(sample_seed(self.seed, _CROP, epoch, index))
        patch = self._crop(index, rng)
        hflip, vflip, transpose = (rng.random(3) < 0.5).tolist()
        if self.flip and hflip:
            patch = patch.flip(2)
        if self.rot90:  # vflip + transpose (+ hflip) cover all 8 rotations/reflections
            if vflip:
                patch = patch.flip(1)
            if transpose:
                patch = patch.transpose(1, 2)
        return {"hq": patch.contiguous(), "key": torch.tensor([epoch, index], dtype=torch.int64)}


def local_batch_size(global_batch: int, world_size: int) -> int:
    """Per-rank batch; :class:`ConfigError` unless ``global_batch`` splits evenly over the ranks."""
    if global_batch % world_size:
        good = world_size * max(1, round(global_batch / world_size))
        raise ConfigError(
            f"data.batch_size {global_batch} is not divisible by the {world_size} processes",
            hint=f"use a multiple of {world_size}, e.g. --set data.batch_size={good}",
        )
    return global_batch // world_size


class ShardSampler(Sampler):
    """Endless ``(epoch, index)`` keys for this rank, starting at global step ``start_step``.

    ``global_batch`` items per step over ``world_size`` ranks (it must divide evenly); the keys
    of step ``t`` on rank ``r`` are stream items ``t*B + r*b ... t*B + (r+1)*b - 1`` with
    ``b = B / world_size`` (see the module docstring). Use with ``DataLoader(batch_size=b)``.
    """

    def __init__(
        self,
        num_items: int,
        global_batch: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
    ) -> None:
        if num_items < 1:
            raise UsageError("no items to sample from")
        self.num_items = num_items
        self.global_batch = global_batch
        self.local_batch = local_batch_size(global_batch, world_size)
        self.seed = seed
        self.rank = rank
        self.start_step = start_step
        self._perm: tuple[int, list[int]] | None = None

    def _order(self, epoch: int) -> list[int]:
        if self._perm is None or self._perm[0] != epoch:
            gen = make_generator(sample_seed(self.seed, _ORDER, epoch))
            self._perm = (epoch, torch.randperm(self.num_items, generator=gen).tolist())
        return self._perm[1]

    def key(self, position: int) -> tuple[int, int]:
        """The ``(epoch, index)`` at stream ``position``."""
        epoch, offset = divmod(position, self.num_items)
        return epoch, self._order(epoch)[offset]

    def keys_for_step(self, step: int) -> list[tuple[int, int]]:
        """This rank's keys of global step ``step``."""
        first = step * self.global_batch + self.rank * self.local_batch
        return [self.key(first + j) for j in range(self.local_batch)]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        step = self.start_step
        while True:
            yield from self.keys_for_step(step)
            step += 1


def make_loader(
    dataset: HRPatches, sampler: ShardSampler, *, num_workers: int = 0, pin_memory: bool = False
) -> DataLoader:
    """A DataLoader yielding this rank's batches of :class:`HRPatches` in :class:`ShardSampler` order.

    Its own generator keeps it from consuming the global torch RNG (whose state is checkpointed);
    worker seeds do not matter, all randomness comes from the keys.
    """
    return DataLoader(
        dataset,
        batch_size=sampler.local_batch,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(0),
    )


@torch.no_grad()
def degrade_batch(
    pipeline: Callable[[Tensor, torch.Generator], Tensor] | None,
    hq: Tensor,
    keys: Tensor,
    seed: int,
) -> Tensor:
    """LR images for ``hq`` (B,3,P,P) in [0,1] on any device: ``lq`` (B,3,P/s,P/s) in [0,1].

    Each image is degraded on its own with a CPU generator seeded from ``(seed, epoch, index)``
    (``keys`` (B,2) int64), so the result does not depend on batch composition, rank or
    device. ``pipeline=None`` (``data.scale == 1``) returns ``hq`` itself.
    """
    if pipeline is None:
        return hq
    out = []
    for i, (epoch, index) in enumerate(keys.tolist()):
        gen = make_generator(sample_seed(seed, _DEGRADE, epoch, index))
        out.append(pipeline(hq[i : i + 1], gen))
    return torch.cat(out, dim=0)


class PairedFolder(Dataset):
    """Validation pairs: LR and HQ images matched by file stem, sorted by stem.

    ``dataset[i] -> (stem, lq (3,h,w), hq (3,H,W))`` float32 in [0,1]. At most ``max_images``
    pairs; unmatched files are ignored with one warning; no pair at all, or an HQ image with a
    side below ``min_size`` (checked up front, not mid-training), is a :class:`UsageError`.
    """

    def __init__(
        self, lq_dir: str | Path, hq_dir: str | Path, max_images: int = 100, *, min_size: int = 1
    ) -> None:
        lq = {p.stem: p for p in find_images(lq_dir)}
        hq = {p.stem: p for p in find_images(hq_dir)}
        stems = sorted(set(lq) & set(hq))
        unmatched = len(set(lq) ^ set(hq))
        if unmatched:
            log.warning("validation: %d file(s) without a partner of the same stem ignored", unmatched)
        if not stems:
            raise UsageError(
                f"no validation pairs: no file stem is in both {lq_dir} and {hq_dir}",
                hint="name the LR and HQ versions of an image alike, e.g. lq/0001.png and hq/0001.png",
            )
        self.pairs = [(s, lq[s], hq[s]) for s in stems[:max_images]]
        for _, _, path in self.pairs:
            size = _image_size(path)
            if size is None or min(size) < min_size:
                found = "unreadable" if size is None else f"{size[0]}x{size[1]}"
                raise UsageError(
                    f"validation image {path} is {found}; validation needs sides >= {min_size} px",
                    hint="remove it from val.hq_dir/val.lq_dir",
                )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[str, Tensor, Tensor]:
        stem, lq, hq = self.pairs[i]
        return stem, image_to_tensor(lq), image_to_tensor(hq)

