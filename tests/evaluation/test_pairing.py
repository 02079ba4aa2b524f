"""Pairing by relative path and stem (evaluation/common.py), as both eval forms use it:
``pairs.pair_folders`` (LR -> HR) and ``folders.pair_dirs`` (SR -> HR)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from realsr_cli.errors import UsageError
from realsr_cli.evaluation import common, folders, pairs


def _png(path, suffix=".png"):
    path = path.with_suffix(suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def tree(tmp_path):
    """lq/sr images a, b, sub/c, odd; hr: a (png), b (png and jpg), sub/c (jpg), extra."""
    for side in ("lq", "sr"):
        for name in ("a", "b", "sub/c", "odd"):
            _png(tmp_path / side / name)
    _png(tmp_path / "hr" / "a")
    _png(tmp_path / "hr" / "b")
    _png(tmp_path / "hr" / "b", ".jpg")
    _png(tmp_path / "hr" / "sub" / "c", ".jpg")
    _png(tmp_path / "hr" / "extra")
    return tmp_path


def _plan(form, tree, **kwargs):
    """(name, HR path) of each pair and the (name, reason) of each image left unpaired."""
    if form == "model":
        plan = pairs.pair_folders(tree / "lq", tree / "hr", **kwargs)
        return [(p.name, p.hq) for p in plan.pairs], plan.missing
    dir_plan = folders.pair_dirs(tree / "sr", tree / "hr", **kwargs)
    return [(p.name, p.hr) for p in dir_plan.pairs], dir_plan.unpaired_sr


@pytest.mark.parametrize("form", ["model", "sr"])
def test_both_forms_pair_alike(form, tree):
    hr = tree / "hr"
    paired, unpaired = _plan(form, tree, recursive=True)
    assert paired == [("a.png", hr / "a.png"), ("sub/c.png", hr / "sub" / "c.jpg")]
    assert unpaired == [("b.png", "several HR images match: b.jpg, b.png"),
                        ("odd.png", f"no HR image odd.* in {hr}")]
    only_c = _plan(form, tree, recursive=True, pattern="c.*")[0]
    assert only_c == [("sub/c.png", hr / "sub" / "c.jpg")]
    assert _plan(form, tree)[0] == [("a.png", hr / "a.png")]


def test_sr_form_lists_unnamed_hr_and_scores_alone_without_hr(tree):
    assert folders.pair_dirs(tree / "sr", tree / "hr", recursive=True).unpaired_hr == ["extra.png"]
    alone = folders.pair_dirs(tree / "sr", None, recursive=True, pattern="sub/*")
    assert [(p.name, p.hr) for p in alone.pairs] == [("sub/c.png", None)]


def test_missing_folders_are_usage_errors(tree):
    with pytest.raises(UsageError, match="LR folder not found"):
        pairs.pair_folders(tree / "nope", tree / "hr")
    with pytest.raises(UsageError, match="HR folder not found"):
        pairs.pair_folders(tree / "lq", tree / "nope")
    with pytest.raises(UsageError, match="SR folder not found"):
        folders.pair_dirs(tree / "nope", tree / "hr")
    with pytest.raises(UsageError, match="HR folder not found"):
        folders.pair_dirs(tree / "sr", tree / "nope")


def test_helpers(tree):
    index = common.stem_index(tree / "hr", True)
    assert sorted(index) == ["a", "b", "extra", "sub/c"] and len(index["b"]) == 2
    assert common.hr_partner("a", index, tree / "hr") == (tree / "hr" / "a.png", "")
    assert common.selected("sub/c.png", "c.png", None) and common.selected("sub/c.png", "c.png", "")
    assert common.selected("sub/c.png", "c.png", "c.*")
    assert not common.selected("a.png", "a.png", "c*")
