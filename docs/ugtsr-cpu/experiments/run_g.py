"""Run an `upsr-g` export (UPSR's auxiliary SR network g alone) over the LR folders that
bench/quality_default.py wrote, so the same `realsr eval` commands can score it.

`realsr upscale` refuses a g-only file (it is an input of the `upsr` stage, not a model), hence
this script. The ATD shape comes from the run's resolved config.

    python docs/ugtsr-cpu/experiments/run_g.py G.safetensors upsr-g.config.toml Q_DIR OUT_DIR

Q_DIR is a quality_default.py --out folder (Q_DIR/SET/lr/*.png); OUT_DIR/SET/*.png are written,
8-bit, gray inputs give gray outputs (the mean of g's RGB).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from realsr_cli._config import from_dict, load_toml
from realsr_cli.engine.io import ImageData, read_image, write_image
from realsr_cli.models.upsr.atd import ATD, ATDConfig
from realsr_cli.models.upsr.net import AUX_PREFIX


def main(weights: str, config: str, q_dir: str, out_dir: str) -> None:
    net = ATD(from_dict(ATDConfig, load_toml(config)["model"])).eval()
    state = load_file(weights)
    net.load_state_dict({k[len(AUX_PREFIX):]: v for k, v in state.items()}, strict=True)
    for lr_dir in sorted(Path(q_dir).glob("*/lr")):
        dest = Path(out_dir) / lr_dir.parent.name
        dest.mkdir(parents=True, exist_ok=True)
        for src in sorted(lr_dir.glob("*.png")):
            pixels = read_image(src).pixels
            gray = pixels.shape[2] == 1
            rgb = np.repeat(pixels, 3, axis=2) if gray else pixels
            x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
            with torch.no_grad():
                sr = net(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()
            if gray:
                sr = sr.mean(axis=2, keepdims=True)
            write_image(dest / src.name, ImageData(pixels=sr, bit_depth=8))
        print(f"{lr_dir.parent.name}: {dest}")


if __name__ == "__main__":
    main(*sys.argv[1:])
