"""Bring-your-own checkpoints: architectures we do not implement, loaded through spandrel.

``realsr upscale --weights 4x-anything.pth`` works for every image-to-image architecture that
spandrel (https://github.com/chaiNNer-org/spandrel, the optional extra ``realsr[community]``)
detects from a state dict: ESRGAN/RRDB, Real-ESRGAN Compact (SRVGG), SwinIR, HAT, DAT, RealPLKSR,
SPAN, OmniSR ... A file is ours when it is a safetensors file with realsr metadata
(``loader.load_any`` decides); everything else comes here:

1. tensors are read safely: ``.pth/.pt/.ckpt/.bin`` with ``torch.load(weights_only=True)`` only
   (a pickle naming any Python global beyond tensors and containers is refused, never executed),
   ``.safetensors`` with safetensors;
2. spandrel unwraps training containers, detects the architecture and its hyper-parameters from
   the keys and shapes, and builds the network;
3. :class:`CommunityNet` wraps it in our model contract (``net.upscale(lq) -> sr``,
   registry/archs.py); :func:`spec_for` turns spandrel's declarations (size requirements, tiling,
   scale, channels, fp16/bf16 support) into the :class:`ArchSpec` the engine follows, and
   :func:`supported_precision` downgrades precisions the model lacks (docs/cli.md, "Bring your
   own checkpoint", has the table).

Registry entries of ``kind = "community"`` (``realsr upscale --model realesrgan-x4plus``) take the
same path: hub.py downloads and verifies the published file, :func:`load_entry` loads it here and
checks that spandrel detects the architecture family and scale the catalog names.

spandrel is imported lazily and only here (layer rule: the registry may use it; models never do).

Size (over STYLE's ~300-line guide): safe pickle reading, spandrel detection and its precision/tiling mapping are one loader.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from realsr_cli.errors import WeightsError
from realsr_cli.registry.archs import ArchSpec
from realsr_cli.registry.catalog import COMMUNITY_ARCHS, WeightsEntry
from realsr_cli.registry.loader import PICKLE_SUFFIXES

log = logging.getLogger(__name__)

__all__ = ["INSTALL_HINT", "PREFIX", "CommunityConfig", "CommunityNet", "detect", "import_spandrel",
           "is_community", "load", "load_entry", "read_state_dict", "require_spandrel", "spec_for",
           "supported_precision"]

INSTALL_HINT = "pip install 'realsr[community]'"
#: our architecture name of a spandrel model: ``spandrel:<spandrel arch id>``
PREFIX = "spandrel:"
#: LR tile side / overlap the engine uses for models whose tiling spandrel marks "supported";
#: "discouraged" ones get a large cap so --tile auto runs the whole image whenever it fits
SUPPORTED_TILE, DISCOURAGED_TILE, OVERLAP = 256, 1024, 16
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, for models that take one gray channel
_CONVERT_HINT = (
    "if it is an official checkpoint of one of our architectures, convert it with "
    "`realsr convert FILE --arch ARCH -o FILE.safetensors`; otherwise try a newer spandrel "
    "(pip install -U spandrel)"
)


@dataclass(frozen=True)
class CommunityConfig:
    """What spandrel detected in a checkpoint (read-only; the network is rebuilt from the file)."""

    arch_id: str  # spandrel's architecture id, e.g. "ESRGAN"
    arch_name: str  # its display name, e.g. "RealESRGAN Compact"
    purpose: str  # "SR" | "FaceSR" | "Restoration"
    scale: int
    input_channels: int
    output_channels: int
    min_size: int  # spandrel SizeRequirements.minimum (LR pixels)
    multiple_of: int  # spandrel SizeRequirements.multiple_of
    square: bool  # spandrel SizeRequirements.square
    tiling: str  # "supported" | "discouraged" | "internal"
    fp16: bool  # spandrel supports_half
    bf16: bool  # spandrel supports_bfloat16
    tags: tuple[str, ...]
    parameters: int
    spandrel_version: str


def is_community(config: Any) -> bool:
    return isinstance(config, CommunityConfig)


#: the torch.library fragment that declares torchvision's two faked operators (kept alive)
_TORCHVISION_OPS: list[Any] = []


def _torchvision_without_compiled_ops() -> None:
    """Make a torchvision whose C++ ops cannot load importable; a no-op when it imports.

    Where the only torchvision wheel is a CUDA build next to a CPU torch (this project's documented
    install: torch 2.13.0+cpu, torchvision 0.28.0 from PyPI), ``import torchvision`` fails in its
    ``_meta_registrations`` with "operator torchvision::nms does not exist" (pytorch/vision#9085),
    and spandrel imports torchvision. The two operator names it registers fake kernels for are
    declared here without an implementation (calling them still fails), so its pure-Python parts
    import; the super-resolution architectures spandrel loads never call torchvision ops.
    """
    import importlib
    import sys

    try:
        import torchvision  # noqa: F401
    except ImportError:
        return  # not installed: spandrel's own import reports it
    except RuntimeError as exc:
        if "torchvision::" not in str(exc) or _TORCHVISION_OPS:
            raise
        log.info("torchvision's compiled operators do not load with torch %s (a build for another "
                    "torch); importing its Python parts only, which spandrel's SR models need",
                    torch.__version__)
        lib = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):  # the fake registrations in torchvision/_meta_registrations.py
            lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TORCHVISION_OPS.append(lib)
        for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
            del sys.modules[name]  # drop the half-imported package before importing it again
        importlib.import_module("torchvision")


def import_spandrel() -> Any:
    """The spandrel module, or a WeightsError (exit 3) that says how to get a working one."""
    try:
        _torchvision_without_compiled_ops()
        import spandrel
    except ModuleNotFoundError as exc:
        if exc.name == "spandrel":
            raise WeightsError(
                "this file is not a realsr weights file, and loading other checkpoints needs the "
                "optional spandrel extra, which is not installed",
                hint=INSTALL_HINT,
            ) from None
        raise WeightsError(f"spandrel is installed but a dependency is missing: {exc}", hint=INSTALL_HINT) from exc
    except Exception as exc:  # e.g. a torchvision built for another torch (pytorch/vision#9085)
        raise WeightsError(
            f"spandrel is installed but cannot be imported ({type(exc).__name__}: {exc})",
            hint=f"install the torchvision build that matches torch {torch.__version__} (from the "
            "same package index as torch), then retry",
        ) from exc
    return spandrel


def _refused(name: str, exc: Exception) -> WeightsError:
    hint = "use a .safetensors version of the model, or re-save only its state dict from a source you trust"
    found = re.search(r"GLOBAL (\S+)", str(exc))
    if found is None:  # garbage, or pickle opcodes safe loading does not accept
        detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(exc))
        return WeightsError(
            f"{name}: safe loading refused its pickle data ({detail[1] if detail else exc}): the file "
            "is corrupt or holds more than tensors, and realsr never unpickles more than tensors, "
            "because unpickling can run arbitrary code",
            hint=hint,
        )
    return WeightsError(
        f"{name} is a pickle that stores Python objects besides tensors ({found[1]}); realsr "
        "refuses to unpickle it, because unpickling can run arbitrary code",
        hint=hint,
    )


def read_state_dict(path: str | os.PathLike[str]) -> Any:
    """The raw object a checkpoint holds, read without running code (see the module doc)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    if p.suffix.lower() not in PICKLE_SUFFIXES:
        try:
            return load_file(str(p), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise WeightsError(f"{p.name}: cannot read its tensors ({exc})") from exc
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _refused(p.name, exc) from exc
    except (RuntimeError, OSError, EOFError, ValueError, AttributeError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = "TorchScript files are not supported; use the model's state dict" if "TorchScript" in str(exc) else None
        raise WeightsError(f"{p.name} is not a readable PyTorch checkpoint ({text})", hint=hint) from exc


def _state_dict(spandrel: Any, obj: Any, name: str) -> dict[str, Tensor]:
    if not isinstance(obj, dict):
        raise WeightsError(f"{name} holds a {type(obj).__name__}, not a state dict")
    sd = spandrel.canonicalize_state_dict(obj)
    tensors = {str(k): v for k, v in sd.items() if isinstance(v, Tensor)}
    if not tensors:
        raise WeightsError(f"{name} holds no tensors (keys: {', '.join(map(str, list(sd)[:8])) or 'none'})")
    return tensors


def detect(path: str | os.PathLike[str]) -> tuple[CommunityConfig, Any]:
    """Detect a checkpoint with spandrel -> (config, spandrel ImageModelDescriptor on the CPU)."""
    p = Path(path)
    obj = read_state_dict(p)  # before spandrel: a refused pickle is refused without the extra too
    spandrel = import_spandrel()
    sd = _state_dict(spandrel, obj, p.name)
    try:
        desc = spandrel.ModelLoader(device="cpu").load_from_state_dict(sd)
    except spandrel.UnsupportedModelError:
        raise WeightsError(
            f"{p.name} is not a realsr weights file, and spandrel {spandrel.__version__} does not "
            "recognise its architecture",
            hint=_CONVERT_HINT,
        ) from None
    except Exception as exc:  # spandrel's detection matched but building/loading failed
        raise WeightsError(
            f"spandrel could not build a model from {p.name} ({type(exc).__name__}: {exc})",
            hint=_CONVERT_HINT,
        ) from exc
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise WeightsError(
            f"{p.name} is a {desc.architecture.name} {desc.purpose} model (image + mask in); realsr "
            "runs image-to-image models only",
            hint="use a super-resolution or restoration checkpoint",
        )
    for side, n in (("input", desc.input_channels), ("output", desc.output_channels)):
        if n not in (1, 3, 4):
            raise WeightsError(f"{p.name} has {n} {side} channels; realsr runs 1-, 3- and 4-channel models")
    req = desc.size_requirements
    config = CommunityConfig(
        arch_id=str(desc.architecture.id),
        arch_name=str(desc.architecture.name),
        purpose=str(desc.purpose),
        scale=int(desc.scale),
        input_channels=int(desc.input_channels),
        output_channels=int(desc.output_channels),
        min_size=int(req.minimum),
        multiple_of=int(req.multiple_of),
        square=bool(req.square),
        tiling=str(desc.tiling.name).lower(),  # spandrel ModelTiling: SUPPORTED/DISCOURAGED/INTERNAL
        fp16=bool(desc.supports_half),
        bf16=bool(desc.supports_bfloat16),
        tags=tuple(str(t) for t in desc.tags),
        parameters=sum(t.numel() for t in desc.model.parameters()),
        spandrel_version=str(spandrel.__version__),
    )
    return config, desc


class CommunityNet(nn.Module):
    """A spandrel image model behind our model contract (registry/archs.py).

    ``upscale(lq)``: lq (B,3,H,W) float in [0,1] -> sr (B,3,sH,sW) float in [0,1] (spandrel clamps
    its output). spandrel pads each input to the model's size requirements (reflect, then
    replicate) and crops the padding off the output; images go through one at a time, as spandrel's
    call API expects. Gray-input models get BT.601 luma, RGBA-input models an opaque alpha; a gray
    output is repeated to RGB, an alpha output dropped. The model is deterministic:
    ``generator``/``steps``/``noise`` are ignored.
    """

    def __init__(self, descriptor: Any, config: CommunityConfig) -> None:
        super().__init__()
        self.model = descriptor.model  # a submodule, so .to()/.eval()/.requires_grad_() reach it
        self.descriptor = descriptor
        self.config = config
        self._warned_tiles = False

    def _adapt_input(self, lq: Tensor) -> Tensor:
        c = self.config.input_channels
        if c == 1:
            w = torch.tensor(_LUMA, dtype=lq.dtype, device=lq.device).view(1, 3, 1, 1)
            return (lq * w).sum(dim=1, keepdim=True)
        if c == 4:
            return torch.cat([lq, torch.ones_like(lq[:, :1])], dim=1)
        return lq

    def upscale(
        self, lq: Tensor, *, generator: Any = None, steps: int | None = None, noise: Tensor | None = None
    ) -> Tensor:
        x = self._adapt_input(lq)
        out = torch.cat([self.descriptor(x[i : i + 1]) for i in range(x.shape[0])], dim=0)
        return out.expand(-1, 3, -1, -1) if out.shape[1] == 1 else out[:, :3]

    def forward(self, lq: Tensor) -> Tensor:
        return self.upscale(lq)

    def manifest_extra(self) -> dict[str, str]:
        """Run-manifest entries (engine/api.py ``manifest_for``)."""
        return {"spandrel_arch": self.config.arch_id, "spandrel_version": self.config.spandrel_version}

    def note_tiles(self, tiles: int) -> None:
        """Called by the engine after each image: warn once when a tiling-discouraged model was tiled."""
        if tiles > 1 and self.config.tiling == "discouraged" and not self._warned_tiles:
            self._warned_tiles = True
            log.warning(
                "%s prefers whole images (spandrel: tiling discouraged) but ran in %d tiles; "
                "expect seams, or use --tile 0 if it fits in memory",
                self.config.arch_name,
                tiles,
            )


def _not_buildable(*_: Any) -> Any:
    """ArchSpec's build/infer_config/convert_official: a spandrel model exists only with its file."""
    raise WeightsError(
        "spandrel models are built from their checkpoint file, not from a config",
        hint="load the file with `realsr upscale --weights FILE`",
    )


def spec_for(config: CommunityConfig) -> ArchSpec:
    """The engine's run contract for a spandrel model (see the module doc, step 3)."""
    tiling = config.tiling
    return ArchSpec(
        name=PREFIX + config.arch_id,
        title=f"{config.arch_name} (spandrel)",
        paper=f"community checkpoint ({config.arch_name}), loaded through spandrel {config.spandrel_version}",
        config_cls=CommunityConfig,
        build=_not_buildable,
        infer_config=_not_buildable,
        convert_official=_not_buildable,
        scale_of=lambda cfg: cfg.scale,
        tile_multiple=max(1, config.multiple_of),
        min_size=max(1, config.min_size),
        tileable=tiling != "internal",
        default_tile=DISCOURAGED_TILE if tiling == "discouraged" else SUPPORTED_TILE,
        default_overlap=OVERLAP,
        half_ok=config.fp16 or config.bf16,
        stochastic=False,
    )


def supported_precision(config: CommunityConfig, precision: str) -> str:
    """``precision`` narrowed to what the model supports (a downgrade is logged as a warning).

    ``auto`` stays ``auto`` (fp16 on CUDA) only for models that support fp16; the device policy
    (engine/device.py) then decides what the device can run.
    """
    key = (precision or "auto").strip().lower()
    if key == "auto":
        return "auto" if config.fp16 else "fp32"
    unsupported = (key == "fp16" and not config.fp16) or (key == "bf16" and not config.bf16)
    if unsupported:
        log.warning("%s requested but %s does not support it (spandrel); running in fp32 instead",
                    key, config.arch_name)
        return "fp32"
    return precision


def load(path: str | os.PathLike[str]) -> tuple[ArchSpec, CommunityConfig, CommunityNet]:
    """Detect and build a community checkpoint: ``(spec, config, net)``, net on the CPU in fp32,
    eval mode (the same shape of answer as ``loader.load_weights``)."""
    config, desc = detect(path)
    net = CommunityNet(desc, config).eval()
    log.info("%s: %s x%d via spandrel %s (%s parameters)", Path(path).name, config.arch_name,
             config.scale, config.spandrel_version, f"{config.parameters:,}")
    if config.purpose == "FaceSR":
        log.warning("%s is a face restoration model: it expects aligned face crops, not whole photos",
                    config.arch_name)
    return spec_for(config), config, net


def require_spandrel(entry: WeightsEntry) -> None:
    """Fail before downloading a community entry when spandrel, which runs it, cannot be imported."""
    try:
        import_spandrel()
    except WeightsError as exc:
        raise WeightsError(
            f"{entry.id} is a community model ({COMMUNITY_ARCHS[entry.arch]}), which realsr runs "
            f"through spandrel: {exc}",
            hint=exc.hint,
        ) from exc


def load_entry(entry: WeightsEntry, path: str | os.PathLike[str]) -> tuple[ArchSpec, CommunityConfig, CommunityNet]:
    """:func:`load` for the verified file of a community catalog entry, refused (WeightsError) unless
    spandrel detects the architecture and scale weights.toml names for it."""
    spec, config, net = load(path)
    expected = COMMUNITY_ARCHS[entry.arch]
    if config.arch_id != expected or config.scale != entry.scale:
        raise WeightsError(
            f"{entry.id}: spandrel detects {Path(path).name} as {config.arch_id} x{config.scale}, but "
            f"weights.toml says {expected} x{entry.scale}",
            hint="the catalog entry (or the file its source serves) is wrong; report it",
        )
    return spec, config, net
