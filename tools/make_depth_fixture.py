#!/usr/bin/env python3
"""Write the Depth Anything parity fixture (tests/fixtures/depth_anything_tiny/) with Transformers.

Runs only where ``transformers`` is installed (a scratch virtual environment, never the project's
own dependencies); the tests read the files it writes and need no Transformers and no network.

What it writes (about 0.3 MB):

``config.json``
    Transformers' ``DepthAnythingConfig`` of a tiny random model with the V2 structure (DINOv2
    with patch 14, LayerScale, four ``out_indices``, DPT reassemble factors 4/2/1/0.5), taken
    from realsr's ``DepthAnythingConfig.tiny()`` so both sides describe the same network.
``model.safetensors``
    That model's weights as Transformers' ``save_pretrained`` writes them: the on-disk key layout
    of the published hub checkpoints. Every tensor is re-drawn from a seeded generator (LayerScale
    and LayerNorm gains away from 1, non-zero biases), so a mis-wired parameter shows up.
``io.safetensors``
    ``input_a`` (2,3,84,70) — a 6x5 patch grid, so the 4x4 learned position grid is
    interpolated — and ``input_b`` (1,3,56,56), the native grid; ``output_a``/``output_b`` are
    Transformers' ``predicted_depth`` for them (eval mode, float32, its default attention).
``reference.json``
    ``small_keys``: every tensor name and shape of Depth-Anything-V2-Small as ``save_pretrained``
    writes it (built from the published Small config on the CPU with random weights);
    ``small_params``: its parameter count; ``resize``: Transformers' DPT processor output sizes
    (``keep_aspect_ratio``, ``ensure_multiple_of=14``, 518x518) for a list of input sizes;
    versions of Transformers and torch used.

Usage (from the repository root)::

    python -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install transformers torch==2.13.0
    PYTHONPATH=. /tmp/tfvenv/bin/python tools/make_depth_fixture.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

# Transformers imports torchvision when it is installed; a torchvision built for another torch
# breaks that import, and nothing here needs it.
sys.modules.setdefault("torchvision", None)  # type: ignore[arg-type]

import torch  # noqa: E402

OUT = Path("tests/fixtures/depth_anything_tiny")
SEED = 20240613
#: the published Depth-Anything-V2-Small-hf config.json (model part)
SMALL = {
    "backbone_config": {
        "model_type": "dinov2", "hidden_size": 384, "num_attention_heads": 6, "image_size": 518,
        "patch_size": 14, "out_indices": [3, 6, 9, 12], "reshape_hidden_states": False,
    },
    "fusion_hidden_size": 64, "head_hidden_size": 32, "head_in_index": -1,
    "neck_hidden_sizes": [48, 96, 192, 384], "patch_size": 14, "reassemble_factors": [4, 2, 1, 0.5],
    "reassemble_hidden_size": 384,
}  # fmt: skip
RESIZE_CASES = [(64, 64), (20, 24), (480, 640), (100, 300), (1000, 2000), (518, 518), (37, 301),
                (300, 30), (7, 9), (2000, 1000), (777, 555)]  # fmt: skip


def _transformers_config(tiny):
    from transformers import DepthAnythingConfig, Dinov2Config

    bb = tiny.backbone
    backbone = Dinov2Config(
        hidden_size=bb.hidden_size, num_hidden_layers=bb.num_layers,
        num_attention_heads=bb.num_heads, mlp_ratio=bb.mlp_ratio, patch_size=bb.patch_size,
        image_size=bb.image_size, layer_norm_eps=bb.layer_norm_eps,
        out_indices=list(tiny.out_indices), reshape_hidden_states=False, apply_layernorm=True,
    )  # fmt: skip
    return DepthAnythingConfig(
        backbone_config=backbone, patch_size=bb.patch_size, reassemble_hidden_size=bb.hidden_size,
        neck_hidden_sizes=list(tiny.neck_hidden_sizes),
        reassemble_factors=list(tiny.reassemble_factors),
        fusion_hidden_size=tiny.fusion_hidden_size, head_hidden_size=tiny.head_hidden_size,
        depth_estimation_type="relative",
    )  # fmt: skip


@torch.no_grad()
def _randomise(model: torch.nn.Module, gen: torch.Generator) -> None:
    for name, p in model.named_parameters():
        if name.endswith("lambda1"):  # LayerScale gains
            p.copy_(0.5 + torch.rand(p.shape, generator=gen))
        elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
        elif p.ndim == 1:  # biases
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
        else:
            fan_in = p[0].numel() if p.ndim > 1 else p.shape[-1]
            p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
    head = model.head.conv3  # keep most of the final ReLU's inputs positive
    head.bias.add_(0.5)


def _saved(model, where: Path) -> Path:
    model.save_pretrained(where)
    return where / "model.safetensors"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    try:
        import numpy as np
        import transformers
        from safetensors import safe_open
        from safetensors.torch import save_file
        from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation
        from transformers.models.dpt.image_processing_pil_dpt import get_resize_output_image_size
    except ImportError as exc:
        print(f"this script needs transformers ({exc})", file=sys.stderr)
        return 2
    from realsr_cli.models.depth import DepthAnythingConfig as OurConfig

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(SEED)
    model = DepthAnythingForDepthEstimation(_transformers_config(OurConfig.tiny())).eval()
    _randomise(model, gen)
    with tempfile.TemporaryDirectory() as tmp:
        weights = _saved(model, Path(tmp))
        (out / "model.safetensors").write_bytes(weights.read_bytes())
        (out / "config.json").write_text((Path(tmp) / "config.json").read_text())

    tensors = {
        "input_a": torch.randn(2, 3, 84, 70, generator=gen),
        "input_b": torch.randn(1, 3, 56, 56, generator=gen),
    }
    with torch.no_grad():
        for case in ("a", "b"):
            depth = model(pixel_values=tensors[f"input_{case}"]).predicted_depth
            tensors[f"output_{case}"] = depth.contiguous()
    save_file(tensors, str(out / "io.safetensors"))

    small = DepthAnythingForDepthEstimation(DepthAnythingConfig(**SMALL))
    with tempfile.TemporaryDirectory() as tmp:
        with safe_open(str(_saved(small, Path(tmp))), framework="pt") as fh:
            keys = {k: list(fh.get_slice(k).get_shape()) for k in sorted(fh.keys())}
    resize = []
    for h, w in RESIZE_CASES:
        size = get_resize_output_image_size(
            np.empty((3, h, w)), output_size=(518, 518), keep_aspect_ratio=True, multiple=14
        )
        resize.append([h, w, int(size.height), int(size.width)])
    reference = {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "small_params": sum(p.numel() for p in small.parameters()),
        "small_keys": keys,
        "resize": resize,
    }
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    for f in sorted(out.iterdir()):
        print(f"{f}  {f.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
