"""Start-up and loading cost: where the time of a small `realsr upscale` goes, and the peak memory
of loading a weights file compared with its size (issue 15, "Loading without copies").

    python bench/bench_load.py                    # shipped models + a released-size FeMaSR file
    python bench/bench_load.py --models bicres-x4 # one model

Each measurement runs in a fresh interpreter (so imports and caches are cold, as for a user):

1. ``python -c "import torch"``: torch's own import, the floor under everything.
2. ``realsr --version`` and ``realsr upscale tiny.png`` (16x16) end to end.
3. Inside one interpreter, per model: import of the engine, catalog + fetch (for a shipped file:
   the sha256 check), reading the tensors and loading them into the network (``load``), a plain
   build of the network for comparison (``build``, after the load so its memory is not counted),
   ``api.load_model`` (run dtype/layout), first call on a 16x16 image, second call.
4. Peak RSS (``VmHWM``; ``ru_maxrss`` of a child starts at its parent's RSS) of that interpreter after torch's import vs after the load, next to
   the file's size: the load's transient copies show as (peak delta) / (file size) above 1.

Also builds released-size networks with random weights as realsr files in a temp folder
(``ARCH-big``: ``femasr-big`` by default, 34M parameters; ``upsr-big``, ``realsrt-big`` on
request), so large models are measured without downloading anything. Prints a table and the load
average; writes nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[2])  # bench/, for _proc
from _proc import status_kib
t0 = time.perf_counter()
import torch
torch_s = time.perf_counter() - t0
rss0 = status_kib("VmHWM")
source = sys.argv[1]
t = time.perf_counter()
from realsr_cli.engine import api
from realsr_cli.registry import catalog as catalog_mod, hub, loader
import_s = time.perf_counter() - t
t = time.perf_counter()
cat = catalog_mod.load_catalog()
if cat.knows(source):
    path = hub.fetch(cat.get(source), offline=True)
else:
    path = source
fetch_s = time.perf_counter() - t
meta = loader.read_metadata(path)
spec, config = loader._spec_and_config(meta, str(path))
t = time.perf_counter()
spec, config, net = loader.load_weights(path)
load_s = time.perf_counter() - t
rss1 = status_kib("VmHWM")  # the load's peak, before anything else of this script allocates
del net
t = time.perf_counter()
net = spec.build(config)  # timed only: a plain build with its random initialisation
build_s = time.perf_counter() - t
del net
t = time.perf_counter()
m = api.load_model(str(path), device="cpu", precision="auto")
model_s = time.perf_counter() - t
x = torch.rand(1, 3, 16, 16)
t = time.perf_counter()
with torch.no_grad():
    m.net.upscale(x.to(m.dtype).contiguous(memory_format=torch.channels_last) if m.spec.channels_last else x.to(m.dtype))
first_s = time.perf_counter() - t
t = time.perf_counter()
with torch.no_grad():
    m.net.upscale(x.to(m.dtype).contiguous(memory_format=torch.channels_last) if m.spec.channels_last else x.to(m.dtype))
second_s = time.perf_counter() - t
print(json.dumps(dict(torch_s=torch_s, import_s=import_s, fetch_s=fetch_s, build_s=build_s,
                      load_s=load_s, load_model_s=model_s, first_s=first_s, second_s=second_s,
                      rss_after_torch_mib=rss0 / 1024, rss_after_load_mib=rss1 / 1024)))
"""


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, env=env, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return time.perf_counter() - t, r.stdout


def big_released(arch: str, folder: Path) -> Path:
    """A realsr file of ``arch`` at its released size with seeded random weights (FeMaSR x4:
    ``FeMaSRConfig.released(4)``; the others' default configs are their released ones)."""
    import torch

    from realsr_cli.models.femasr import FeMaSRConfig
    from realsr_cli.registry.archs import get_arch
    from realsr_cli.registry.loader import save_weights

    spec = get_arch(arch)
    torch.manual_seed(0)
    config = FeMaSRConfig.released(4) if arch == "femasr" else spec.config_cls()
    net = spec.build(config)
    path = folder / f"{arch}-released-size.safetensors"
    save_weights(path, arch=arch, config=config, state_dict=net.state_dict())
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=["bicres-x4", "ugtsr-x4-cpu", "ssr-x4-cpu", "femasr-big"])
    ap.add_argument("--repeats", type=int, default=3, help="runs per measurement (the median is shown)")
    args = ap.parse_args()
    env = dict(os.environ)
    py = sys.executable
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        from PIL import Image

        Image.new("RGB", (16, 16), (120, 80, 200)).save(tmpd / "tiny.png")

        def median(cmd):
            return sorted(run(cmd, env)[0] for _ in range(args.repeats))[args.repeats // 2]

        torch_import = median([py, "-c", "import torch"])
        version = median([py, "-m", "realsr_cli", "--version"])
        upscale = median([py, "-m", "realsr_cli", "upscale", str(tmpd / "tiny.png"), "-o", str(tmpd / "o.png")])
        print(f"import torch: {torch_import:.2f}s; realsr --version: {version:.2f}s; "
              f"realsr upscale 16x16 (default model) end to end: {upscale:.2f}s "
              f"({upscale - torch_import:.2f}s beyond torch's import)")
        for name in args.models:
            big = name.endswith("-big")
            source = str(big_released(name.removesuffix("-big"), tmpd)) if big else name
            if big:
                size = Path(source).stat().st_size
            else:
                from realsr_cli.registry import catalog, hub

                size = hub.fetch(catalog.load_catalog().get(name), offline=True).stat().st_size
            runs = [json.loads(run([py, "-c", CHILD, source, str(Path(__file__).resolve().parent)], env)[1]) for _ in range(args.repeats)]
            med = {k: sorted(r[k] for r in runs)[len(runs) // 2] for k in runs[0]}
            delta = med["rss_after_load_mib"] - med["rss_after_torch_mib"]
            rows.append((name, size / 2**20, med, delta))
    print(f"\n{'model':<14}{'file MiB':>9}{'engine import':>14}{'fetch+sha':>10}{'build':>7}{'load':>7}"
          f"{'load_model':>11}{'1st call':>9}{'2nd call':>9}{'peak RSS +MiB':>14}{'peak/file':>10}")
    for name, mib, m, delta in rows:
        print(f"{name:<14}{mib:>9.1f}{m['import_s']:>14.3f}{m['fetch_s']:>10.3f}{m['build_s']:>7.3f}"
              f"{m['load_s']:>7.3f}{m['load_model_s']:>11.3f}{m['first_s']:>9.3f}{m['second_s']:>9.3f}"
              f"{delta:>14.1f}{delta / mib:>10.2f}")
    print(f"\nload average {os.getloadavg()}; torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
