"""Quick PSNR-Y of a bicres checkpoint (raw and EMA) vs bicubic on /work/cmp/val."""
import sys, glob, torch, numpy as np
from PIL import Image
from realsr_cli.models.bicres import BicResNet, BicResConfig
from realsr_cli._config import from_dict
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
ck = torch.load(sys.argv[1], weights_only=False, map_location='cpu')
cfg = from_dict(BicResConfig, ck['config']['model'])
def y(x):  # (H,W,3) [0,1] -> Y in [16,235]/255 as BasicSR
    return (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2] + 16.0) / 255.0
def ps(a, b):
    a, b = y(a)[4:-4, 4:-4], y(b)[4:-4, 4:-4]
    return 10 * np.log10(1.0 / np.mean((a - b) ** 2))
for which in ('nets', 'ema'):
    net = BicResNet(cfg).eval()
    sd = ck['nets']['g'] if which == 'nets' else ck['ema']
    net.load_state_dict(sd)
    out = []
    for pipe in ('bicubic', 'mild', 'realesrgan'):
        d_b, d_m = [], []
        for f in sorted(glob.glob(f'/work/cmp/val/lr-{pipe}/*.png')):
            name = f.split('/')[-1]
            hr = np.asarray(Image.open(f'/work/cmp/val/hr/{name}').convert('RGB'), np.float64) / 255
            lq = torch.from_numpy(np.asarray(Image.open(f).convert('RGB'), np.float32) / 255).permute(2, 0, 1)[None]
            with torch.no_grad():
                sr = net(lq).clamp(0, 1)
                bic = torch.nn.functional.interpolate(lq, scale_factor=4, mode='bicubic', align_corners=False).clamp(0, 1)
            q = lambda t: np.round(t[0].permute(1, 2, 0).numpy().astype(np.float64) * 255) / 255
            d_b.append(ps(q(bic), hr)); d_m.append(ps(q(sr), hr))
        out.append(f"{pipe}: bic {np.mean(d_b):.2f} model {np.mean(d_m):.2f} ({np.mean(d_m)-np.mean(d_b):+.2f})")
    print(which, ck['step'], ' | '.join(out))
