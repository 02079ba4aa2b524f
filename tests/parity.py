"""Shared helpers for the official-checkpoint parity fixtures in ../shared/parity/."""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """Locate ../shared (override with REALSR_SHARED). Fails loudly (never skips) when missing."""
    env = os.environ.get("REALSR_SHARED")
    path = Path(env) if env else REPO_ROOT.parent / "shared"
    if not path.is_dir():
        pytest.fail(
            f"shared data folder not found at {path}: tests need ../shared next to the repo "
            "(or REALSR_SHARED=/path/to/shared)",
            pytrace=False,
        )
    return path


@dataclass
class ParityFixture:
    name: str
    path: Path
    meta: dict
    io: dict[str, torch.Tensor]

    @property
    def weights(self) -> dict[str, torch.Tensor]:
        """The official-layout state dict shipped with a reduced fixture."""
        f = self.path / "weights.safetensors"
        if not f.exists():
            raise FileNotFoundError(f"{self.name} has no weights.safetensors: use recipe_state_dict")
        return load_file(str(f))

    def recipe_state_dict(self, official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rebuild a full-size fixture's weights from its per-key recipe (see parity/README.md).

        ``official`` supplies the tensors the recipe marks ``init == "official"`` (integer buffers,
        attention masks), typically taken from our freshly constructed model's state_dict; their
        checksums are verified against the recipe.
        """
        out: dict[str, torch.Tensor] = {}
        for entry in self.meta["state_dict_recipe"]:
            key, shape = entry["key"], tuple(entry["shape"])
            init = entry.get("init", "randn")
            if init == "official":
                if key not in official:
                    raise KeyError(f"recipe needs the official value of {key}")
                v = official[key]
                assert tuple(v.shape) == shape, (key, v.shape, shape)
                if "sum" in entry:
                    got = float(v.double().sum())
                    assert abs(got - entry["sum"]) <= 1e-3 * max(1.0, abs(entry["sum"])), (
                        f"official tensor {key}: sum {got} != recipe {entry['sum']}"
                    )
                out[key] = v.clone()
                continue
            g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
            v = torch.randn(shape, generator=g, dtype=torch.float32) * float(entry.get("std", 0.02))
            if init == "one_plus_randn":
                v = v + 1.0
            elif init != "randn":
                raise ValueError(f"unknown recipe init {init!r} for {key}")
            out[key] = v
        return out


def load_fixture(name: str) -> ParityFixture:
    path = shared_dir() / "parity" / name
    if not path.is_dir():
        pytest.fail(f"parity fixture {name} missing at {path}", pytrace=False)
    meta = json.loads((path / "fixture.json").read_text())
    io = load_file(str(path / "io.safetensors"))
    return ParityFixture(name=name, path=path, meta=meta, io=io)


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4, what: str = "") -> None:
    """Max abs error relative to the expected tensor's max magnitude (fixture tolerance ~1e-4)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual.double() - expected.double()).abs().max().item()
    scale = max(expected.double().abs().max().item(), 1e-12)
    assert err <= rtol * scale, f"{what}: max abs err {err:.3e} > {rtol:g} x {scale:.3e}"
