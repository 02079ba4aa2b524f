"""The CLI as a user runs it: real images, exit codes, files on disk, pipes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from realsr_cli import __version__
from realsr_cli.engine import io as rio
from tests.cli.conftest import run_cli, run_subprocess


def _png(path, w=24, h=20, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    c = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, size=(h, w, c), dtype=np.uint8)
    Image.fromarray(arr[..., 0] if c == 1 else arr, mode).save(path)
    return path


def test_version():
    res = run_cli(["--version"])
    assert res.code == 0 and res.stdout.decode().strip() == f"realsr {__version__}"


def test_convert_writes_metadata(femasr_weights):
    from realsr_cli.registry.loader import read_metadata

    meta = read_metadata(femasr_weights)
    assert meta["arch"] == "femasr" and meta["scale"] == "4" and meta["format"] == "realsr"
    assert len(meta["source_sha256"]) == 64


def test_upscale_file_json_and_manifest(tmp_path, femasr_weights):
    src = _png(tmp_path / "in.png", 24, 20)
    dst = tmp_path / "out" / "res.png"
    res = run_cli(["upscale", str(src), "--weights", str(femasr_weights), "-o", str(dst), "--json", "--tile", "0"])
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["output_size"] == [96, 80] and report["arch"] == "femasr" and report["tiles"] == 1
    img = rio.read_image(dst)
    assert (img.width, img.height) == (96, 80)
    assert "femasr" in json.dumps(img.text)
    assert not [p for p in dst.parent.iterdir() if p.name != "res.png"], "temp files left behind"


def test_default_output_name(tmp_path, femasr_weights):
    src = _png(tmp_path / "photo.png", 16, 16)
    res = run_cli(["upscale", str(src), "--weights", str(femasr_weights)])
    assert res.code == 0, res.stderr
    assert (tmp_path / "photo_x4.png").exists()


def test_pipe_stdin_to_stdout(tmp_path, femasr_weights):
    data = _png(tmp_path / "a.png", 16, 12).read_bytes()
    res = run_subprocess(["upscale", "-", "-o", "-", "--weights", str(femasr_weights)], stdin=data)
    assert res.code == 0, res.stderr
    img = rio.decode_image(res.stdout)
    assert (img.width, img.height) == (64, 48)


def test_non_native_scale_resizes(tmp_path, femasr_weights):
    src = _png(tmp_path / "in.png", 20, 10)
    dst = tmp_path / "o.png"
    res = run_cli(["upscale", str(src), "--weights", str(femasr_weights), "--scale", "3", "-o", str(dst)])
    assert res.code == 0, res.stderr
    img = rio.read_image(dst)
    assert (img.width, img.height) == (60, 30)


def test_batch_real_inputs_alpha_16bit_gray(tmp_path, femasr_weights, inputs_dir):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(inputs_dir / "wolf_gray.jpg", src / "wolf_gray.jpg")
    shutil.copy(inputs_dir / "tree_alpha_16bit.png", src / "sub" / "tree.png")
    # a small RGBA crop of the real alpha image keeps CI fast
    Image.open(inputs_dir / "children-alpha.png").crop((200, 100, 296, 164)).save(src / "children.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    out = tmp_path / "out"
    res = run_cli(["batch", str(src), str(out), "--recursive", "--weights", str(femasr_weights), "--json"])
    assert res.code == 6, res.stderr  # the broken file fails, the rest are done
    summary = json.loads(res.stdout)
    assert summary["done"] == 3 and len(summary["failed"]) == 1 and "broken.png" in summary["failed"][0]["input"]
    gray = rio.read_image(out / "wolf_gray.jpg")
    assert gray.is_gray and (gray.width, gray.height) == (944, 944)
    tree = rio.read_image(out / "sub" / "tree.png")
    assert tree.bit_depth == 16 and tree.has_alpha and (tree.width, tree.height) == (1368, 1024)
    child = rio.read_image(out / "children.png")
    assert child.has_alpha and (child.width, child.height) == (384, 256)
    # skip-existing resumes: nothing is redone
    res2 = run_cli(["batch", str(src), str(out), "-r", "--weights", str(femasr_weights), "--skip-existing", "--json"])
    assert json.loads(res2.stdout)["skipped"] == 3


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["upscale", "missing.png", "--weights", "W"], 4),
        (["upscale", "x.png", "--model", "no-such-model"], 3),
        (["upscale", "x.png", "--tile", "banana"], 2),
        (["upscale", "x.png", "--device", "cuda", "--weights", "W"], 5),
        (["upscale", "x.png", "--device", "cuda"], 5),
        (["frobnicate"], 2),
    ],
)
def test_exit_codes(tmp_path, femasr_weights, args, code, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _png(tmp_path / "x.png", 8, 8)
    args = [str(femasr_weights) if a == "W" else a for a in args]
    res = run_cli(args)
    assert res.code == code, (res.code, res.stderr)
    if code in (3, 4, 5):
        assert "error:" in res.stderr and "hint:" in res.stderr


def test_corrupt_input_is_exit_4_and_writes_nothing(tmp_path, femasr_weights):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0garbage")
    res = run_cli(["upscale", str(bad), "--weights", str(femasr_weights), "-o", str(tmp_path / "o.png")])
    assert res.code == 4 and not (tmp_path / "o.png").exists()


def test_interrupt_exits_130_and_leaves_nothing(tmp_path, femasr_weights, monkeypatch):
    from realsr_cli.engine import api

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "run_model", boom)
    src = _png(tmp_path / "in.png")
    res = run_cli(["upscale", str(src), "--weights", str(femasr_weights), "-o", str(tmp_path / "o.png")])
    assert res.code == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_a_folder_named_like_a_model_does_not_hide_the_id(tmp_path, monkeypatch):
    """`--model ugtsr` with a folder `ugtsr` in the working directory still means the registry name;
    a path with a separator or a weights suffix is a file."""
    from realsr_cli.engine.api import looks_like_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ugtsr").mkdir()
    (tmp_path / "mine").write_bytes(b"x")
    assert not looks_like_path("ugtsr")
    assert looks_like_path("mine")  # an existing file that names no model
    assert looks_like_path("./ugtsr") and looks_like_path("w.safetensors") and looks_like_path("W.PTH")
    assert not looks_like_path("not-a-model-or-file")


def test_output_that_is_the_input_is_refused_unless_overwrite(tmp_path, femasr_weights):
    """Issue 18 (3): `-o a.png` for input a.png (also via `..` or a symlink) replaced the original."""
    from PIL import Image

    src = tmp_path / "a.png"
    Image.new("RGB", (16, 16), (10, 120, 200)).save(src)
    before = src.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.png").symlink_to(src)
    for out in (src, tmp_path / "sub" / ".." / "a.png", tmp_path / "link.png"):
        res = run_cli(["upscale", str(src), "-o", str(out), "--weights", femasr_weights, "--device", "cpu"])
        assert res.code == 2 and "is the input file" in res.stderr and "--overwrite" in res.stderr
        assert src.read_bytes() == before
    res = run_cli(["upscale", str(src), "-o", str(src), "--weights", femasr_weights, "--device", "cpu",
                   "--overwrite"])
    assert res.code == 0, res.stderr
    assert Image.open(src).size == (64, 64)


def test_camera_jpeg_with_broken_exif_upscales_on_its_default_name(tmp_path, femasr_weights):
    from PIL import Image

    src = tmp_path / "bad_exif.jpg"
    Image.new("RGB", (16, 16), (100, 50, 20)).save(src, exif=b"Exif\x00\x00" + b"\x13\x37not-tiff" * 4)
    res = run_cli(["upscale", str(src), "--weights", femasr_weights, "--device", "cpu"])
    assert res.code == 0, res.stderr
    assert Image.open(tmp_path / "bad_exif_x4.jpg").size == (64, 64)


def test_batch_into_an_unwritable_out_dir_fails_before_any_model_work(tmp_path, monkeypatch):
    """Issue 18 (6): 8 of 8 images failed after 46 s of compute; now exit 4 before the model loads
    (a weights file that does not exist proves no model was loaded)."""
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (8, 8)).save(src / "a.png")
    (tmp_path / "file").write_text("x")
    res = run_cli(["batch", str(src), str(tmp_path / "file" / "out"), "--weights", str(tmp_path / "none.safetensors")])
    assert res.code == 4 and "cannot write to the output folder" in res.stderr


def test_models_list_marks_the_default_model_and_never_shortens_ids(monkeypatch):
    """Issue 18: `"default": false` on the model that is the default; ids cut at 80 columns."""
    import json as _json

    from realsr_cli.registry.catalog import load_catalog

    res = run_cli(["models", "list", "--json"])
    assert res.code == 0, res.stderr
    marked = [m["id"] for m in _json.loads(res.stdout)["models"] if m["package_default"]]
    assert marked == [load_catalog().default().id]
    monkeypatch.setenv("COLUMNS", "60")
    res = run_cli(["models", "list"])
    text = res.stderr if isinstance(res.stderr, str) else res.stderr.decode()
    for entry in load_catalog().entries:
        assert entry.id in text


@pytest.mark.parametrize("shell,marker", [("zsh", "compdef"), ("fish", "complete --command realsr"), ("bash", "COMPREPLY")])
def test_show_completion_prints_the_named_shell(shell, marker, capsys):
    """Issue 18: `--show-completion zsh` printed the bash script."""
    from realsr_cli.cli.app import main

    main(["--show-completion", shell])
    assert marker in capsys.readouterr().out


def test_progress_lines_without_a_terminal(monkeypatch):
    """Issue 18: a long upscale gave no progress at all when stderr is not a terminal."""
    import io as _io

    from rich.console import Console

    from realsr_cli.cli import _output

    buf = _io.StringIO()
    monkeypatch.setattr(_output, "err", Console(file=buf, force_terminal=False))
    view = _output.LineProgressView(every=0.0)
    view._t0 -= 100  # a run that has been going for a while
    for done in range(1, 4):
        view.tiles(done, 3)
    err = buf.getvalue()
    assert "tiles 1/3 (33%)" in err and "tiles 3/3 (100%)" in err
    buf.truncate(0)
    buf.seek(0)
    quick = _output.LineProgressView(every=10.0)
    quick.tiles(1, 1)  # a run shorter than the interval prints nothing
    assert buf.getvalue() == ""
