"""Issue 15, the CPU fast path for the codebook models: half precision never changes a code
(the deciding parts stay fp32), channels-last and the phase-decomposed upsampling conv equal the
plain NCHW path within fp32 tolerance, and the CLI's allocator setting can be turned off."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from realsr_cli.engine import api
from realsr_cli.engine.runner import RunOptions, run_model
from realsr_cli.models._blocks.conv import UpBlock, upsample2x_conv3x3
from realsr_cli.models.femasr import config_from_state_dict, convert_official_state_dict
from realsr_cli.registry.capabilities import DecidingParts, has
from realsr_cli.registry.loader import save_weights
from tests.parity import assert_close_rel, load_fixture


@pytest.fixture(scope="module")
def femasr_file(tmp_path_factory):
    """The reduced official FeMaSR x4 fixture's weights as a realsr file (what `realsr convert` writes)."""
    from safetensors.torch import load_file

    fx = load_fixture("femasr_x4_reduced")
    state = convert_official_state_dict(load_file(str(fx.path / "weights.safetensors")))
    path = tmp_path_factory.mktemp("fast") / "femasr.safetensors"
    save_weights(path, arch="femasr", config=config_from_state_dict(state, None), state_dict=state)
    return path, fx


def _dtypes(modules) -> set[torch.dtype]:
    return {p.dtype for m in modules for p in m.parameters()}


def test_bf16_keeps_the_code_decision_in_fp32_and_codes_equal_fp32(femasr_file):
    path, fx = femasr_file
    fp32 = api.load_model(str(path), device="cpu", precision="fp32")
    bf16 = api.load_model(str(path), device="cpu", precision="bf16")
    assert bf16.dtype == torch.bfloat16 and has(bf16.net, DecidingParts)
    deciding = bf16.net.fp32_parts()
    assert _dtypes(deciding) == {torch.float32}
    assert _dtypes([bf16.net.decoder_group, bf16.net.out_conv]) == {torch.bfloat16}
    # the deciding parts hold exactly the fp32 values (never rounded through bf16)
    for a, b in zip(fp32.net.fp32_parts(), deciding, strict=True):
        for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
            assert torch.equal(pa, pb), name
    for tag in sorted({k.split(".", 1)[0] for k in fx.io}):
        lq = fx.io[f"{tag}.lr"]
        x = lq.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            codes32 = fp32.net.encode_and_decode(fp32.net.pad_lq(x)).indices
            codes16 = bf16.net.encode_and_decode(bf16.net.pad_lq(x)).indices
        assert torch.equal(codes16, codes32), tag
        assert torch.equal(codes32, fx.io[f"{tag}.indices"]), tag
        out32 = run_model(fp32, lq, RunOptions(tile=0)).sr
        out16 = run_model(bf16, lq, RunOptions(tile=0)).sr
        assert out16.dtype == torch.float32
        assert_close_rel(out32, fx.io[f"{tag}.out"], what=f"{tag} fp32 engine vs official")  # 1e-4
        assert_close_rel(out16, out32, rtol=5e-2, what=f"{tag} bf16 vs fp32")


def test_fp32_redo_and_back_keeps_the_split(femasr_file):
    """The runner's fp32 redo of an overflowing half tile switches the net to fp32 and back."""
    path, fx = femasr_file
    model = api.load_model(str(path), device="cpu", precision="bf16")
    lq = fx.io[sorted(k for k in fx.io if k.endswith(".lr"))[0]]
    redo = model(lq, dtype=torch.float32)
    assert _dtypes([model.net]) == {torch.float32, torch.bfloat16}
    assert _dtypes(model.net.fp32_parts()) == {torch.float32}
    assert torch.isfinite(redo).all()


def test_ugtsr_keeps_its_fusion_in_fp32():
    model = api.load_model("ugtsr-x4-cpu", device="cpu", precision="bf16", offline=True)
    assert model.net.fusion is not None and model.net.fusion in model.net.fp32_parts()
    assert _dtypes(model.net.fp32_parts()) == {torch.float32}
    ref = api.load_model("ugtsr-x4-cpu", device="cpu", precision="fp32", offline=True)
    lq = torch.rand(1, 3, 40, 36, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        a = model.net.match_indices(model.net.pad_lq(lq))[0]
        b = ref.net.match_indices(ref.net.pad_lq(lq))[0]
    assert torch.equal(a, b)


def test_femasr_channels_last_equals_nchw(femasr_file):
    path, fx = femasr_file
    model = api.load_model(str(path), device="cpu", precision="fp32")
    assert model.spec.channels_last and not model.channels_last  # fp32: NCHW
    lq = torch.rand(1, 3, 27, 35, generator=torch.Generator().manual_seed(2))
    plain = run_model(model, lq, RunOptions(tile=0)).sr
    model.net.to(memory_format=torch.channels_last)
    fast = model(lq.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)
    bf16 = api.load_model(str(path), device="cpu", precision="bf16")
    assert bf16.channels_last and bf16.net.out_conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_fp32_gives_the_same_bits_on_any_thread_count(femasr_file):
    """`--precision fp32` is exact: the same output on 1 and 2 threads (torchrun ranks run with
    fewer threads than one process; their shards must equal one process's images)."""
    path, _ = femasr_file
    model = api.load_model(str(path), device="cpu", precision="fp32")
    lq = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(0))
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            outs.append(run_model(model, lq, RunOptions(tile=0)).sr)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("size", [(1, 1), (5, 7), (16, 9)])
def test_phase_decomposed_upsampling_conv_equals_upsample_then_conv(fmt, bias, size):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 5, 3, padding=1, bias=bias).to(memory_format=fmt)
    x = torch.randn(2, 6, *size).contiguous(memory_format=fmt)
    with torch.no_grad():
        ref = conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        got = upsample2x_conv3x3(x, conv)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    if fmt == torch.channels_last and min(size) > 1:
        assert got.is_contiguous(memory_format=torch.channels_last)


def test_upblock_trains_through_the_plain_layers():
    """With autograd on (training) UpBlock runs upsample + conv; the gradients are the plain ones."""
    torch.manual_seed(0)
    block = UpBlock(4, 4, norm_type="none", act_type="silu")
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    calls = []
    block[0].register_forward_hook(lambda *a: calls.append("upsample"))
    block(x).sum().backward()
    assert calls == ["upsample"] and x.grad is not None
    with torch.no_grad():
        block(x)
    assert calls == ["upsample"]  # inference skipped the upsampler module


def _allocator_state(env: dict[str, str]) -> str:
    code = "from realsr_cli.engine.device import tune_cpu_allocator as t; print(t(), t())"
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_cpu_allocator_tuning_is_on_for_glibc_and_can_be_turned_off():
    import platform

    expected = "True True" if platform.libc_ver()[0] == "glibc" else "False False"
    assert _allocator_state({"REALSR_MALLOC": ""}) == expected
    assert _allocator_state({"REALSR_MALLOC": "system"}) == "False False"
