"""What the RealSRT stages share: the tokenizer's training wrapper, the CCM network, token helpers, and the frozen-parts base of stages 2-4."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import ClassVar, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from realsr_cli.diffusion.masking import MaskSchedule
from realsr_cli.engine.tiling import REALSRT_SIGMA, tiled_forward
from realsr_cli.errors import UsageError
from realsr_cli.models.realsrt import RealSRTConfig, RealSRTNet
from realsr_cli.models.realsrt.transformer import TokenTransformer
from realsr_cli.models.realsrt.vqgan import VQGAN
from realsr_cli.training.losses import PerceptualLoss, mse_loss
from realsr_cli.training.stage import Export, Stage, StepContext
from realsr_cli.training.stages.adversarial import (
    gan_param_groups,
    gan_step,
    generator_adversarial_loss,
)
from realsr_cli.training.stages.helpers import frozen_and_trained_state_dict
from realsr_cli.training.stages.realsrt.config import ARCH, PART_PREFIXES, RealSRTImageLossConfig
from realsr_cli.training.stages.reconstruction import (
    reconstruction_terms,
)
from realsr_cli.training.stages.upstream import load_upstream_parts

log = logging.getLogger(__name__)

class VQGANOutput(NamedTuple):
    """What :class:`VQGANTrainingNet` returns: ``image`` (B,3,H,W) reconstruction, ``z_e``
    (B,c,h,w) encoder output, ``codes`` (B,c,h,w) the selected codebook vectors (with gradient to
    the codebook in ``loss`` mode), ``ids`` (B,h,w) int64 token ids."""

    image: Tensor
    z_e: Tensor
    codes: Tensor
    ids: Tensor


class VQGANTrainingNet(nn.Module):
    """Training forward of the tokenizer ``vae`` (a :class:`VQGAN`), straight-through estimator.

    ``forward(x)``: ``z_e = quant_conv(E(x))``, ids = nearest codes, ``z_q = z_e + sg[e - z_e]``,
    image ``D(post_quant_conv(z_q))``. With ``ema_decay`` (the official EMA codebook) the codebook
    is not a trainable parameter: in training mode every forward folds the batch's assignments
    into ``cluster_size_ema`` (K,) and ``embed_ema`` (K, c) (summed over DDP ranks) and sets the
    codebook to their ratio, after the codes of this batch were looked up; codes with an EMA count
    below 1 are restarted from random encoder outputs (identical on every rank).

    State-dict keys: ``vae.*`` (= the ``realsrt`` network's tokenizer keys) plus the two EMA
    buffers (training only, never exported).
    """

    def __init__(
        self, vae: VQGAN, *, ema_decay: float | None = None, restart_unused: bool = True,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.vae = vae
        self.ema_decay = ema_decay
        self.restart_unused = restart_unused
        self.eps = eps
        book = vae.quantizer.codebook
        if ema_decay is not None:
            book.weight.requires_grad_(False)
            self.register_buffer("cluster_size_ema", torch.zeros(book.n_embed))
            self.register_buffer("embed_ema", book.codes.detach().clone())

    @property
    def last_layer(self) -> nn.Parameter:
        """Weight of the decoder's output convolution (for the adaptive adversarial weight)."""
        return self.vae.decoder.model[-1].weight

    def forward(self, x: Tensor) -> VQGANOutput:
        vae = self.vae
        z_e = vae.encode(x)
        ids = vae.quantizer(z_e)
        codes = vae.quantizer.embed(ids)
        if self.training and self.ema_decay is not None:
            self._ema_update(z_e.detach(), ids)
        z_q = z_e + (codes - z_e).detach()
        image = vae.decoder(vae.post_quant_conv(z_q))
        return VQGANOutput(image, z_e, codes, ids)

    @torch.no_grad()
    def _ema_update(self, z_e: Tensor, ids: Tensor) -> None:
        book = self.vae.quantizer.codebook
        k, c = book.n_embed, z_e.shape[1]
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, c).float()
        idx = ids.reshape(-1)
        counts = torch.bincount(idx, minlength=k).float()
        sums = torch.zeros(k, c, device=flat.device).index_add_(0, idx, flat)
        distributed = dist.is_available() and dist.is_initialized()
        if distributed:
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        decay = self.ema_decay
        assert decay is not None
        self.cluster_size_ema.mul_(decay).add_(counts, alpha=1 - decay)
        self.embed_ema.mul_(decay).add_(sums, alpha=1 - decay)
        if self.restart_unused:
            dead = self.cluster_size_ema < 1
            if bool(dead.any()):
                pick = torch.randint(flat.shape[0], (k,)).to(flat.device)  # CPU stream, moved
                fresh = flat[pick].contiguous()
                if distributed:
                    dist.broadcast(fresh, 0)
                self.embed_ema[dead] = fresh[dead]
                self.cluster_size_ema[dead] = 1.0
        n = self.cluster_size_ema.sum()
        size = (self.cluster_size_ema + self.eps) / (n + k * self.eps) * n
        book.weight[:k] = (self.embed_ema / size[:, None]).to(book.weight.dtype)


class CCMNet(nn.Module):
    """The trainable part of the CCM (Sec. 3.3), sharing its modules with a :class:`RealSRTNet`.

    ``forward(h, lr_up)``: ``h + zero_out(fuse_res2(fuse_attn(fuse_res1([h, E'(lr_up)]))))`` with
    ``h`` (B,c,g,g) the post-quant features of the HR tokens and ``lr_up`` (B,3,sH,sW) the
    bicubic-upsampled LR patch; the result goes through the frozen decoder. Attribute names are
    the network's, so this module's state-dict keys are the ``realsrt`` keys of the CCM.
    """

    def __init__(self, net: RealSRTNet) -> None:
        super().__init__()
        if not net.config.ccm.enabled:
            raise UsageError("the network has no CCM (model.ccm.enabled = false)")
        self.trainable_copy_encoder = net.trainable_copy_encoder
        self.fuse_res1 = net.fuse_res1
        self.fuse_attn = net.fuse_attn
        self.fuse_res2 = net.fuse_res2
        self.zero_out = net.zero_out

    def forward(self, h: Tensor, lr_up: Tensor) -> Tensor:
        r = torch.cat([h, self.trainable_copy_encoder(lr_up)], dim=1)
        r = self.fuse_res2(self.fuse_attn(self.fuse_res1(r)))
        return h + self.zero_out(r)


# ------------------------------------------------------------------------------- helpers
def adaptive_adversarial_weight(nll: Tensor, g_loss: Tensor, last_layer: Tensor) -> Tensor:
    """Esser et al. (CVPR 2021, Eq. 7): ``||grad_L nll|| / (||grad_L g_loss|| + 1e-4)``, clamped
    to [0, 1e4] and detached, with L the given last-layer weight. Both graphs are retained."""
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.float().norm() / (g_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, 1e4).detach()


def _sync_token_embeddings(transformer: TokenTransformer, net: RealSRTNet) -> None:
    """Rows 0..K-1 of ``transformer.token_emb`` <- the codebook (Sec. 3.2); row K unchanged."""
    with torch.no_grad():
        codes = net.vae.quantizer.codebook.codes
        transformer.token_emb.weight[: codes.shape[0]].copy_(codes)


def _sync_ccm_encoder(net: RealSRTNet) -> None:
    """The CCM's encoder E' <- a copy of the tokenizer's encoder (Sec. 3.3)."""
    if net.config.ccm.enabled:
        net.trainable_copy_encoder.load_state_dict(net.vae.encoder.state_dict())


def assemble_state_dict(
    config: RealSRTConfig, vae_state: Mapping[str, Tensor], *, seed: int
) -> dict[str, Tensor]:
    """A complete ``realsrt`` state dict (CPU) around a trained tokenizer ``vae_state``.

    Generator, critic and CCM are a fresh initialisation drawn from ``seed`` (the global RNG is
    left untouched), their token embeddings copies of the codebook, the CCM encoder a copy of the
    tokenizer's encoder and ``zero_out`` zero: the handoff file of ``realsrt-vqgan``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = RealSRTNet(config)
    net.vae.load_state_dict({k: v.detach().cpu() for k, v in vae_state.items()}, strict=True)
    _sync_token_embeddings(net.generator, net)
    _sync_token_embeddings(net.critic, net)
    _sync_ccm_encoder(net)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _part_fields(parts: tuple[str, ...]) -> list[str]:
    """The [model] fields a file must share with the config for ``parts`` to fit."""
    names = ["tokenizer"]
    if "generator" in parts or "critic" in parts:
        names += ["scale", "lr_patch"]
    return names + [p for p in ("generator", "critic") if p in parts]


def _load_parts(
    net: RealSRTNet, path: str, parts: tuple[str, ...], *, stage: str, producer: str
) -> None:
    """Copy the ``parts`` of the realsrt file at ``path`` into ``net`` (shapes checked first)."""
    load_upstream_parts(
        net, path, arch=ARCH, file_kind="a realsrt file", parts=parts,
        prefixes=tuple(p for part in parts for p in PART_PREFIXES[part]),
        fields=_part_fields(parts), stage=stage, producer=producer,
    )


@torch.no_grad()
def generate_with_generator_confidence(
    generator: TokenTransformer, lr_ids: Tensor, schedule: MaskSchedule, mask_id: int
) -> Tensor:
    """MaskGIT decoding with the generator's own confidences (the paper's ablation (a)).

    Like :meth:`RealSRTNet.generate`, but the ``k_s`` re-masked tokens are the newly predicted ones
    with the lowest softmax probability, and tokens kept once stay fixed. LR ids (B,N) -> (B,N).
    Used to validate the generator before a critic exists.
    """
    steps = schedule.num_inference_steps
    assert steps is not None
    context = generator.context(lr_ids)
    ids = torch.full_like(lr_ids, mask_id)
    for step in range(steps):
        mask = ids == mask_id
        probs = generator.decode(ids, context, mask).float().softmax(dim=-1)
        confidence, pred = probs.max(dim=-1)
        pred_ids = torch.where(mask, pred, ids)
        scores = torch.where(mask, -confidence, torch.full_like(confidence, float("-inf")))
        ids = schedule.step(pred_ids, scores, step)
    return ids


def sample_tokens(logits: Tensor, temperature: float) -> Tensor:
    """One token per position from ``softmax(logits / temperature)`` (B,N,K) -> (B,N), by inverse
    CDF with uniforms from the CPU generator (moved), so a seed reproduces on any device."""
    cdf = (logits.float() / temperature).softmax(dim=-1).cumsum(dim=-1)
    u = torch.rand(cdf.shape[:-1]).to(cdf.device) * cdf[..., -1]
    ids = torch.searchsorted(cdf.contiguous(), u.unsqueeze(-1), right=True).squeeze(-1)
    return ids.clamp_(max=logits.shape[-1] - 1)


def image_terms(
    sr: Tensor, hq: Tensor, loss: RealSRTImageLossConfig, perceptual: PerceptualLoss | None
) -> dict[str, Tensor]:
    """Weighted ``mse`` / ``l1`` / ``perceptual`` (/ ``style``) terms of (B,3,H,W) images."""
    terms = reconstruction_terms(sr, hq, loss, perceptual)
    if loss.l1 == 0:
        del terms["l1"]
    if loss.mse > 0:
        terms = {"mse": loss.mse * mse_loss(sr.float(), hq.float()), **terms}
    return terms


def adversarial_terms(
    stage: Stage, ctx: StepContext, fake: Tensor, nll: Tensor,
    loss: RealSRTImageLossConfig, last_layer: Callable[[], Tensor],
) -> dict[str, Tensor]:
    """``{"g_adv", "adv_weight"}`` (empty before ``loss.adversarial_start`` or without D)."""
    if "d" not in stage.nets or ctx.step < loss.adversarial_start:
        return {}
    g_adv = generator_adversarial_loss(stage, fake)
    weight = (
        adaptive_adversarial_weight(nll, g_adv, last_layer())
        if loss.adaptive_adversarial
        else g_adv.new_ones(())
    )
    return {"g_adv": loss.adversarial * weight * g_adv, "adv_weight": weight}


def adversarial_step(
    stage: Stage,
    ctx: StepContext,
    terms: dict[str, Tensor],
    extra: dict[str, Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    logs: Mapping[str, Tensor | float] | None = None,
) -> dict[str, Tensor | float]:
    """:func:`gan_step` for the tokenizer and CCM stages: ``extra`` is what
    :func:`adversarial_terms` returned; its ``g_adv`` joins ``terms``, and when present (the
    adversarial phase) ``adv_weight`` is logged after ``logs`` and the D step runs."""
    extra = dict(extra)
    weight = extra.pop("adv_weight", None)
    more = {**(logs or {}), **({} if weight is None else {"adv_weight": weight})}
    return gan_step(stage, ctx, {**terms, **extra}, real, fake, d_step=weight is not None, logs=more)



class FrozenParts(nn.Module):
    """The children of a :class:`RealSRTNet` other than ``trained``, under their own names (so the
    state-dict keys are the network's), all without gradients.

    Listed as net ``"frozen"`` of the stages 2-4: it has no trainable parameter, so the trainer
    neither wraps it in DDP nor gives it an optimizer, but every checkpoint holds its tensors.
    ``realsr train export`` builds a fresh stage without :meth:`Stage.load_inputs`, so this is what
    makes :meth:`Stage.export` exact from the checkpoint alone (upstream file moved, changed or
    random).
    """

    def __init__(self, net: RealSRTNet, trained: nn.Module) -> None:
        super().__init__()
        skip = {id(m) for m in trained.modules()}
        for name, child in net.named_children():
            if id(child) not in skip:
                self.add_module(name, child)
        self.requires_grad_(False)


class FrozenBaseStage(Stage):
    """A stage that trains one part of a :class:`RealSRTNet` (``self.base``) and freezes the rest.

    Subclasses set ``_consumes`` (parts read from the input file) and ``_producer`` (the stage
    that writes it) and call :meth:`_register` with the trained module. Nets: ``g`` (trained),
    ``frozen`` (:class:`FrozenParts`, everything else), plus ``d`` where a stage has one.
    """

    _consumes: ClassVar[tuple[str, ...]]
    _producer: ClassVar[str]
    ema_net = "g"

    def __init__(self, config, device: torch.device) -> None:
        super().__init__(config, device)
        config.inputs.require(self.name)
        self.base = RealSRTNet(config.model).to(device)
        self.base.requires_grad_(False).eval()
        self.schedule = MaskSchedule(
            config.model.num_tokens, mask_id=config.model.mask_id, schedule=config.model.schedule
        )

    # --------------------------------------------------------------- inputs
    def load_inputs(self) -> None:
        base, path = self.base, self.config.inputs.path()
        if path:
            _load_parts(base, path, self._consumes, stage=self.name, producer=self._producer)
        else:
            log.warning(
                "%s: RANDOM %s (inputs.allow_random_* = true)", self.name, ", ".join(self._consumes)
            )
        for part in ("generator", "critic"):
            if part not in self._consumes:
                _sync_token_embeddings(getattr(base, part), base)
        if "ccm" not in self._consumes:
            _sync_ccm_encoder(base)

    def _register(self, trained: nn.Module) -> None:
        trained.requires_grad_(True)
        self.nets["g"] = trained
        self.nets["frozen"] = FrozenParts(self.base, trained)

    def frozen(self) -> Iterator[nn.Module]:
        return iter(self.net("frozen").children())

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return gan_param_groups(self, (p for p in self.net("g").parameters() if p.requires_grad))

    # --------------------------------------------------------------- helpers
    @torch.no_grad()
    def tokens(self, lq: Tensor, hq: Tensor | None = None) -> tuple[Tensor, Tensor | None, Tensor]:
        """``(lr_ids, hr_ids, lr_up)``: tokens (B,N) of the bicubic-upsampled LR patch and of the
        HR patch (None without ``hq``), in float32 (discrete choices as at inference)."""
        base = self.base
        lr_up = base.upsample(lq)
        lr_ids = base.tokenize(lr_up)
        hr_ids = base.tokenize(hq) if hq is not None else None
        return lr_ids, hr_ids, lr_up

    def mask_tokens(self, hr_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Random training mask (Sec. 3.2): per sample ``round(gamma(r) N)`` (at least 1) tokens,
        r ~ U(0, 1), replaced by [M]. Returns ``(masked_ids, mask)``, both (B,N)."""
        return self.schedule.add_noise(hr_ids)

    def _tiled(self, fn: Callable[[Tensor], Tensor], lq: Tensor) -> Tensor:
        """Sec. 3.4 aggregation: LR patches of ``lr_patch``, overlap half, Gaussian var 0.05."""
        cfg = self.config.model
        return tiled_forward(
            lambda x, _tiles: fn(x), lq, scale=cfg.scale, tile=cfg.lr_patch,
            overlap=cfg.lr_patch // 2, sigma=REALSRT_SIGMA, margin=0,
        )

    def _export(self, prefix: str, state: dict[str, dict[str, Tensor]]) -> Export:
        """The whole network from ``state`` alone: ``frozen`` as is, ``g`` under ``prefix`` (its
        frozen token embedding too: an EMA of a constant stays bit-identical)."""
        sd = frozen_and_trained_state_dict(self, state, self.base, "g", prefix=prefix)
        return Export(ARCH, self.config.model, sd)
