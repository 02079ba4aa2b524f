#!/usr/bin/env python3
"""Build a small, reproducible photo corpus for training the embedded default model.

Sources (all reachable from our machines without DIV2K):

* Debian packages ``lomiri-wallpapers-16.04``, ``plasma-workspace-wallpapers`` and
  ``mate-backgrounds``: fetched with ``apt-get download`` (or taken from ``--debs DIR``) and
  unpacked with ``dpkg -x`` into a temporary directory; nothing is installed.
* The colour photographs bundled in scikit-image (``skimage/data``), read straight out of the
  pinned wheel fetched with ``pip download scikit-image==<ver> --no-deps`` (nothing installed).

Only the files in the explicit allowlists below are used. They were chosen by looking at every
image in the packages: drawn, rendered, abstract and gradient wallpapers are excluded, and where a
photo ships at several resolutions only the largest is used.

Each image is converted to 8-bit RGB (EXIF orientation applied, non-sRGB ICC profiles converted
to sRGB), downscaled with Lanczos so its longer side is at most ``--max-side`` (default 2048; 0
keeps the original size), and written as ``OUT_DIR/<source>_<name>.png``. ``OUT_DIR/MANIFEST.json``
records package + version, path in package, licence, sha256 of source and output, and sizes.

The output is deterministic for given inputs and Pillow/zlib versions. The script refuses to write
into a non-empty OUT_DIR unless ``--force`` is given.

Usage::

    python tools/make_corpus.py OUT_DIR [--debs DIR] [--cache DIR] [--max-side 2048] [--force]
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# --------------------------------------------------------------------------------------------
# Allowlists. (name, path inside the package, key used to look the file up in the package's
# debian/copyright). Versions are the ones the allowlist was built against; other versions are
# used with a warning (a missing allowlisted file is an error).
# --------------------------------------------------------------------------------------------

LOMIRI = "lomiri-wallpapers-16.04"
PLASMA = "plasma-workspace-wallpapers"
MATE = "mate-backgrounds"

TESTED_VERSIONS = {LOMIRI: "20.04.0-2", PLASMA: "4:5.27.5-2", MATE: "1.26.0-1"}
SOURCE_TAG = {LOMIRI: "lomiri", PLASMA: "plasma", MATE: "mate"}

_LB = "usr/share/backgrounds"
_PW = "usr/share/wallpapers"
_MB = "usr/share/backgrounds/mate"

ALLOWLIST: dict[str, list[tuple[str, str, str]]] = {
    # 13 of 15. Excluded: umang_by_Abhishek_Mudgal (rendered colour gradient),
    # analogpattern_by_Peter_Nerlich (texture with a synthetic rainbow gradient overlay).
    LOMIRI: [
        (n, f"{_LB}/{f}", f"16.04/{f}")
        for n, f in [
            ("bridge", "Bridge_by_Sander_Klootwijk.jpg"),
            ("dragonfly", "Dragonfly_by_Bolly.jpg"),
            ("picture_0b", "Picture_0B_by_freespace.jpg"),
            ("picture_1a", "Picture_1A_by_freespace.jpg"),
            ("wine", "Wine_by_Jakkub_Mede.jpg"),
            ("aitzgorri", "aitzgorri_by_Aitzol_Berasategi.jpg"),
            ("free", "free_by_Peter_Nerlich.jpg"),
            ("friends", "friends_by_Aitzol_Berasategi.jpg"),
            ("greentock", "greentock_by_Peter_Nerlich.jpg"),
            ("life", "life_by_Aitzol_Berasategi.jpg"),
            ("picosdeeuropa", "picosdeeuropa_by_Aitzol_Berasategi.jpg"),
            ("seeding", "seeding_by_Clements_Engelhardt.jpg"),
            ("sunset", "sunset_by_Aitzol_Berasategi.jpg"),
        ]
    ],
    # 11 of 30 wallpaper themes; each ships one real file at 2560x1600 (the other sizes are
    # symlinks to it). Excluded: all rendered/vector/low-poly/illustrated themes (Altai, Autumn,
    # Canopee, Cascade, Cluster, Elarun, Flow, FlyingKonqui, Honeywave, IceCold, Kay, Kokkini,
    # MilkyWay, Opal, PastelHills, Patak, SafeLanding, Shell, Volna) and all screenshot.* files.
    # ColdRipple and Grey are black-and-white photographs (stored as RGB / L).
    PLASMA: [
        (n.lower(), f"{_PW}/{n}/contents/images/2560x1600.jpg", "*")
        for n in [
            "BytheWater",
            "ColdRipple",
            "ColorfulCups",
            "DarkestHour",
            "EveningGlow",
            "FallenLeaf",
            "Grey",
            "Kite",
            "OneStandsOut",
            "Path",
            "summer_1am",
        ]
    ],
    # The 12 files in nature/. Excluded: everything in abstract/ (rendered shapes, transparent
    # PNGs, Elephants is a painting shipped at 3 resolutions) and desktop/ (logos, stripes,
    # blurred rendered auroras).
    MATE: [
        (Path(f).stem.lower(), f"{_MB}/{f}", f)
        for f in [
            "nature/Aqua.jpg",
            "nature/Blinds.jpg",
            "nature/Dune.jpg",
            "nature/FreshFlower.jpg",
            "nature/Garden.jpg",
            "nature/GreenMeadow.jpg",
            "nature/LadyBird.jpg",
            "nature/RainDrops.jpg",
            "nature/Storm.jpg",
            "nature/TwoWings.jpg",
            "nature/Wood.jpg",
            "nature/YellowFlower.jpg",
        ]
    ],
}

SKIMAGE_VERSION = "0.26.0"
# Colour photographs with clear public-domain / CC0 status (from the skimage.data docstrings).
# Excluded: grayscale images (camera, moon, coins, brick, grass, gravel, text, page, ...),
# synthetic ones (color, logo, chessboard_*, phantom, horse), scientific imaging (retina,
# ihc, cell, hubble_deep_field) and motorcycle_left/right (Middlebury stereo pair: no explicit
# licence; right is a near-duplicate of left).
SKIMAGE = [
    ("astronaut", "skimage/data/astronaut.png", "Public domain (NASA Great Images)"),
    ("chelsea", "skimage/data/chelsea.png", "CC0-1.0 (Stefan van der Walt)"),
    ("coffee", "skimage/data/coffee.png", "CC0-1.0 (Rachel Michetti)"),
    ("rocket", "skimage/data/rocket.jpg", "Public domain (SpaceX photos)"),
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Debian packages
# --------------------------------------------------------------------------------------------


def find_deb(directory: Path, pkg: str) -> Path | None:
    hits = sorted(directory.glob(f"{pkg}_*.deb"))
    return hits[-1] if hits else None


def get_debs(debs_dir: Path | None, cache: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg in ALLOWLIST:
        deb = find_deb(debs_dir, pkg) if debs_dir else None
        if deb is None:
            deb = find_deb(cache, pkg)
        if deb is None:
            cache.mkdir(parents=True, exist_ok=True)
            log(f"apt-get download {pkg} -> {cache}")
            subprocess.run(["apt-get", "download", pkg], cwd=cache, check=True)
            deb = find_deb(cache, pkg)
            if deb is None:
                raise SystemExit(f"apt-get download {pkg} produced no .deb in {cache}")
        out[pkg] = deb
    return out


def deb_field(deb: Path, field: str) -> str:
    r = subprocess.run(
        ["dpkg-deb", "-f", str(deb), field], check=True, capture_output=True, text=True
    )
    return r.stdout.strip()


def parse_dep5(text: str) -> list[tuple[list[str], str, str]]:
    """Parse a machine-readable debian/copyright into (patterns, copyright, licence) paragraphs."""
    paras = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, val = line.partition(":")
                key = key.strip().lower()
                fields[key] = val.strip()
        if "files" in fields:
            pats = fields["files"].split()
            lic = fields.get("license", "").splitlines()[0] if fields.get("license") else ""
            cr = " ".join(fields.get("copyright", "").split())
            paras.append((pats, cr, lic))
    return paras


def dep5_lookup(paras, key: str) -> tuple[str, str]:
    found = ("", "")
    for pats, cr, lic in paras:  # DEP-5: the last matching paragraph wins
        if any(fnmatch.fnmatchcase(key, p) for p in pats):
            found = (cr, lic)
    return found


# --------------------------------------------------------------------------------------------
# scikit-image wheel
# --------------------------------------------------------------------------------------------


def get_skimage_wheel(wheel: Path | None, cache: Path) -> Path | None:
    if wheel is not None:
        return wheel
    hits = sorted(cache.glob(f"scikit_image-{SKIMAGE_VERSION}-*.whl"))
    if hits:
        return hits[-1]
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        f"scikit-image=={SKIMAGE_VERSION}",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(cache),
        "-q",
    ]
    log(" ".join(cmd))
    r = subprocess.run(cmd)
    hits = sorted(cache.glob(f"scikit_image-{SKIMAGE_VERSION}-*.whl"))
    if r.returncode != 0 or not hits:
        log(
            "WARNING: could not download the scikit-image wheel; skipping skimage photos "
            "(pass --skimage-wheel PATH, or --no-skimage to silence this)"
        )
        return None
    return hits[-1]


# --------------------------------------------------------------------------------------------
# Image conversion
# --------------------------------------------------------------------------------------------


def to_rgb8(im: Image.Image) -> tuple[Image.Image, list[str]]:
    notes = []
    im = ImageOps.exif_transpose(im)
    icc = im.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            desc = ImageCms.getProfileDescription(src).strip()
            if "srgb" not in desc.lower():
                if im.mode not in ("RGB", "CMYK"):
                    im = im.convert("RGB")
                im = ImageCms.profileToProfile(
                    im, src, ImageCms.createProfile("sRGB"), outputMode="RGB"
                )
                notes.append(f"converted ICC '{desc}' to sRGB")
        except Exception as e:  # colour management is best effort
            notes.append(f"ICC profile ignored ({e})")
    if im.mode in ("I;16", "I;16B", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        a = np.clip(np.round(a / (257.0 if a.max() > 255 else 1.0)), 0, 255).astype(np.uint8)
        im = Image.fromarray(a, "L")
        notes.append("high bit depth reduced to 8-bit")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
        notes.append("alpha composited on white")
    if im.mode == "L":
        notes.append("grayscale source")
    return im.convert("RGB"), notes


def downscale(im: Image.Image, max_side: int) -> Image.Image:
    w, h = im.size
    if max_side <= 0 or max(w, h) <= max_side:
        return im
    s = max_side / max(w, h)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return im.resize(size, Image.Resampling.LANCZOS)


def write_png(im: Image.Image, path: Path) -> str:
    # A fresh image without .info: no ICC/EXIF/text chunks (the pixels are sRGB by now, and
    # ImageCms's generated sRGB profile carries a timestamp, which would break determinism).
    clean = Image.frombytes("RGB", im.size, im.tobytes())
    buf = io.BytesIO()
    clean.save(buf, format="PNG", optimize=False, compress_level=6)
    data = buf.getvalue()
    tmp = path.with_suffix(".png.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return sha256_bytes(data)


def add_image(entries, out_dir: Path, max_side: int, name: str, raw: bytes, meta: dict) -> None:
    with Image.open(io.BytesIO(raw)) as src:
        src.load()
        orig_size = src.size
        rgb, notes = to_rgb8(src)
    full_size = rgb.size
    rgb = downscale(rgb, max_side)
    if rgb.size != full_size:
        notes.append(
            f"Lanczos downscale {full_size[0]}x{full_size[1]} -> {rgb.size[0]}x{rgb.size[1]}"
        )
    fname = f"{name}.png"
    digest = write_png(rgb, out_dir / fname)
    entries.append(
        {
            "file": fname,
            **meta,
            "source_sha256": sha256_bytes(raw),
            "source_size": list(orig_size),
            "size": list(rgb.size),
            "megapixels": round(rgb.size[0] * rgb.size[1] / 1e6, 3),
            "sha256": digest,
            "notes": notes,
        }
    )
    log(f"  {fname:32s} {rgb.size[0]}x{rgb.size[1]}")


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path, help="output directory (must be empty unless --force)")
    ap.add_argument("--debs", type=Path, help="directory holding the three .deb files")
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "realsr-corpus",
        help="where downloaded .deb/.whl files are kept (default: %(default)s)",
    )
    ap.add_argument("--skimage-wheel", type=Path, help="use this scikit-image wheel file")
    ap.add_argument("--no-skimage", action="store_true", help="skip the scikit-image photos")
    ap.add_argument(
        "--max-side",
        type=int,
        default=2048,
        help="Lanczos-downscale so the longer side is at most N px; 0 = keep "
        "original size (default: %(default)s)",
    )
    ap.add_argument("--force", action="store_true", help="write into a non-empty OUT_DIR")
    args = ap.parse_args(argv)

    out_dir: Path = args.out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not args.force:
        log(f"error: {out_dir} is not empty (use --force to overwrite)")
        return 2
    for tool in ("dpkg", "dpkg-deb"):
        if shutil.which(tool) is None:
            log(f"error: {tool} not found (this script needs a Debian/Ubuntu host)")
            return 2
    out_dir.mkdir(parents=True, exist_ok=True)

    debs = get_debs(args.debs, args.cache)
    entries: list[dict] = []
    packages: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="realsr-corpus-") as tmp:
        for pkg, deb in debs.items():
            version = deb_field(deb, "Version")
            if version != TESTED_VERSIONS[pkg]:
                log(
                    f"WARNING: {pkg} {version} differs from the allowlisted version "
                    f"{TESTED_VERSIONS[pkg]}; check the images"
                )
            root = Path(tmp) / pkg
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
            cr_path = root / "usr/share/doc" / pkg / "copyright"
            paras = parse_dep5(cr_path.read_text(encoding="utf-8", errors="replace"))
            packages[pkg] = {"version": version, "deb": deb.name, "deb_sha256": sha256_file(deb)}
            log(f"{pkg} {version}")
            for name, rel, key in ALLOWLIST[pkg]:
                path = root / rel
                if not path.is_file():
                    raise SystemExit(f"error: allowlisted file missing in {pkg}: {rel}")
                copyright_, lic = dep5_lookup(paras, key)
                meta = {
                    "source": pkg,
                    "source_version": version,
                    "path": rel,
                    "license": lic,
                    "copyright": copyright_,
                }
                md = path.parents[2] / "metadata.json" if pkg == PLASMA else None
                if md is not None and md.is_file():
                    kp = json.loads(md.read_text(encoding="utf-8")).get("KPlugin", {})
                    meta["metadata_license"] = kp.get("License", "")
                    meta["authors"] = [a.get("Name", "") for a in kp.get("Authors", [])]
                add_image(
                    entries,
                    out_dir,
                    args.max_side,
                    f"{SOURCE_TAG[pkg]}_{name}",
                    path.read_bytes(),
                    meta,
                )

    if not args.no_skimage:
        wheel = get_skimage_wheel(args.skimage_wheel, args.cache)
        if wheel is not None:
            packages["scikit-image"] = {
                "version": SKIMAGE_VERSION,
                "wheel": wheel.name,
                "wheel_sha256": sha256_file(wheel),
            }
            log(f"scikit-image {wheel.name}")
            with zipfile.ZipFile(wheel) as zf:
                for name, rel, lic in SKIMAGE:
                    meta = {
                        "source": "scikit-image",
                        "source_version": SKIMAGE_VERSION,
                        "path": rel,
                        "license": lic,
                        "copyright": "",
                    }
                    add_image(
                        entries, out_dir, args.max_side, f"skimage_{name}", zf.read(rel), meta
                    )

    written = {e["file"] for e in entries}
    strays = sorted(
        p.name for p in out_dir.iterdir() if p.name not in written and p.name != "MANIFEST.json"
    )
    if strays:
        log(f"WARNING: files in {out_dir} not produced by this run: {', '.join(strays)}")
    manifest = {
        "generator": "tools/make_corpus.py",
        "max_side": args.max_side,
        "packages": packages,
        "count": len(entries),
        "total_megapixels": round(sum(e["megapixels"] for e in entries), 3),
        "images": entries,
    }
    (out_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log(f"{len(entries)} images, {manifest['total_megapixels']} MP -> {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
