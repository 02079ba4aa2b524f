"""Vector quantizer: nearest-neighbour lookup in a learned codebook (VQ-VAE, van den Oord et al. 2017).

``z_i -> Z_k, k = argmin_j ||z_i - Z_j||^2`` (FeMaSR eq. 1; VQGAN eq. 3). The squared distances are
exposed on their own (:meth:`VectorQuantizer.distances`, :meth:`VectorQuantizer.nearest`) so methods
that match features against a pretrained codebook with more than one candidate per position
(top-k matching) reuse the same arithmetic.

Layout: features (B,C,H,W) with C = ``code_dim``; indices (B,1,H,W) int64 (the official FeMaSR
layout), or (B,k,H,W) for top-k. Distances are computed in float32 whatever the feature dtype,
so half-precision inference picks the same codes as float32 away from ties.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["Quantized", "VectorQuantizer"]


@dataclass
class Quantized:
    """Result of :meth:`VectorQuantizer.forward` (all (B,·,H,W) like the input).

    ``z_q``: the quantized features with straight-through gradients, ``z + sg[codes - z]`` — equal to
    ``codes`` up to float rounding, gradients flow to the encoder. ``codes``: the selected codebook
    rows, gradients flow to the codebook (for the ``||sg[z] - codes||^2`` codebook term of the VQ
    loss). ``indices``: (B,1,H,W) int64 code ids.
    """

    z_q: Tensor
    codes: Tensor
    indices: Tensor


class VectorQuantizer(nn.Module):
    """Codebook of ``num_codes`` vectors of size ``code_dim`` (key ``embedding.weight``, (K, C)).

    Initialised uniform in [-1/K, 1/K] like the taming/FeMaSR quantizer. Stateless apart from the
    codebook: losses (commitment, codebook, Gram) are the trainer's business, computed from
    :class:`Quantized`.
    """

    #: rows of the (positions x codes) distance matrix evaluated at once (bounds peak memory)
    chunk_rows: int = 1 << 15

    def __init__(self, num_codes: int, code_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_codes, code_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_codes, 1.0 / num_codes)

    @property
    def num_codes(self) -> int:
        return self.embedding.num_embeddings

    @property
    def code_dim(self) -> int:
        return self.embedding.embedding_dim

    @property
    def codebook(self) -> Tensor:
        """(K, C) codebook."""
        return self.embedding.weight

    def _flat(self, z: Tensor) -> Tensor:
        if z.dim() != 4 or z.shape[1] != self.code_dim:
            raise ValueError(f"expected (B,{self.code_dim},H,W) features, got {tuple(z.shape)}")
        return z.permute(0, 2, 3, 1).reshape(-1, self.code_dim)

    def _pairwise(self, flat: Tensor) -> Tensor:
        """(N, K) squared Euclidean distances ``|z|^2 + |e|^2 - 2 z.e`` in float32."""
        flat = flat.float()
        codebook = self.codebook.float()
        return (
            flat.square().sum(1, keepdim=True)
            + codebook.square().sum(1)
            - 2.0 * flat @ codebook.t()
        )

    def distances(self, z: Tensor) -> Tensor:
        """Squared distances of every position to every code: (B,C,H,W) -> (B,K,H,W) float32."""
        b, _, h, w = z.shape
        d = self._pairwise(self._flat(z))
        return d.view(b, h, w, self.num_codes).permute(0, 3, 1, 2)

    def nearest(self, z: Tensor, k: int = 1) -> tuple[Tensor, Tensor]:
        """The ``k`` nearest codes per position, closest first.

        Returns ``(distances, indices)``, each (B,k,H,W): squared distances (float32) and int64
        code ids. Evaluated in chunks of positions, so memory stays bounded on large maps.
        """
        b, _, h, w = z.shape
        flat = self._flat(z)
        dists, ids = [], []
        for part in flat.split(self.chunk_rows):
            d = self._pairwise(part)
            if k == 1:
                val, idx = d.min(dim=1, keepdim=True)
            else:
                val, idx = d.topk(k, dim=1, largest=False, sorted=True)
            dists.append(val)
            ids.append(idx)
        dist = torch.cat(dists).view(b, h, w, k).permute(0, 3, 1, 2).contiguous()
        index = torch.cat(ids).view(b, h, w, k).permute(0, 3, 1, 2).contiguous()
        return dist, index

    def lookup(self, indices: Tensor) -> Tensor:
        """Codebook rows for code ids: (B,1,H,W) or (B,H,W) int -> (B,C,H,W)."""
        if indices.dim() == 4:
            if indices.shape[1] != 1:
                raise ValueError(f"expected (B,1,H,W) indices, got {tuple(indices.shape)}")
            indices = indices[:, 0]
        return self.embedding(indices.long()).permute(0, 3, 1, 2)

    def forward(self, z: Tensor) -> Quantized:
        """Quantize (B,C,H,W) features to their nearest codes (FeMaSR eq. 1)."""
        indices = self.nearest(z, 1)[1]
        codes = self.lookup(indices).to(z.dtype)
        z_q = z + (codes - z).detach()
        return Quantized(z_q=z_q, codes=codes, indices=indices)
