"""Text-conditioned ε-predicting U-Net (DDPM, Ho et al. 2020, with Improved-DDPM style blocks).

forward(x_t, t, context, context_mask) -> eps [N, C, H, W], or with `learn_sigma` [N, 2C, H, W]:
ε̂ then the variance coefficients v ∈ [−1, 1] of Σ_θ (Improved DDPM eq. 15). The timestep is the paper's t ∈ {1..T}
(int64). Conditioning: a sinusoidal timestep embedding plus the masked mean of the prompt
tokens drive a scale-shift (FiLM) in every residual block; cross-attention lets image
features attend to the prompt tokens (padding masked by an additive −1e9 bias). Two
coordinate channels and learned 2-D positional embeddings on the attention queries help
bind words like "top left" to places. No data-dependent Python control flow: the module
exports with torch.onnx at a dynamic batch size.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from diffusion_studio.errors import UsageError

_MASK_BIAS = -1e9


@dataclass
class UNetConfig:
    image_size: int = 32
    in_channels: int = 3
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (8,)  # self-attention at these feature sizes
    cross_attention_resolutions: tuple[int, ...] = (16, 8)
    context_dim: int = 384
    num_heads: int = 4
    groups: int = 8  # GroupNorm groups
    dropout: float = 0.0
    coord_channels: bool = True
    # Improved DDPM §3.1: also output v for the learned-range variance (2C output channels).
    learn_sigma: bool = False
    # A learned embedding per prompt-token position added to the cross-attention keys (0: none),
    # zero-initialised, so attention can also select a token by where it stands in the prompt
    # ("the colour of the first noun") and not only by what the text encoder made of it.
    token_positions: int = 0
    # FiLM also gets the mean of the prompt's token embeddings — a bag of words, the same at every
    # pixel. False: the prompt reaches the U-Net through cross-attention only, where a pixel can take
    # its colour from the words of its own object ("a red circle and a blue square").
    pooled_text: bool = True

    def __post_init__(self) -> None:
        self.channel_mults = tuple(int(m) for m in self.channel_mults)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        self.cross_attention_resolutions = tuple(int(r) for r in self.cross_attention_resolutions)

    @property
    def downsampling(self) -> int:
        """Total downsampling factor: the image size must be a multiple of it."""
        return 2 ** (len(self.channel_mults) - 1)

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(self.image_size // 2**i for i in range(len(self.channel_mults)))

    def validate(self) -> None:
        """Raise UsageError with one sentence for a value of the wrong type, out of range or inconsistent."""
        for name, lo, hi in _INT_BOUNDS:
            value = getattr(self, name)
            if not _is_int(value) or not lo <= value <= hi:
                raise UsageError(f"unet.{name} must be an integer in [{lo}, {hi}], got {value!r}.")
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, tuple) or len(value) > 8 or not all(_is_int(v) and 1 <= v <= 4096 for v in value):
                raise UsageError(f"unet.{name} must be a list of at most 8 integers in [1, 4096], got {value!r}.")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise UsageError(f"unet.dropout must be a number, got {self.dropout!r}.")
        if not isinstance(self.coord_channels, bool):
            raise UsageError(f"unet.coord_channels must be true or false, got {self.coord_channels!r}.")
        if not isinstance(self.learn_sigma, bool):
            raise UsageError(f"unet.learn_sigma must be true or false, got {self.learn_sigma!r}.")
        if not isinstance(self.pooled_text, bool):
            raise UsageError(f"unet.pooled_text must be true or false, got {self.pooled_text!r}.")
        if not self.pooled_text and not self.cross_attention_resolutions:
            raise UsageError("A U-Net without pooled_text needs cross-attention (cross_attention_resolutions) "
                             "to see the prompt at all.")
        if not _is_int(self.token_positions) or not 0 <= self.token_positions <= 4096:
            raise UsageError(f"unet.token_positions must be an integer in [0, 4096], got {self.token_positions!r}.")
        if not self.channel_mults or any(m < 1 for m in self.channel_mults):
            raise UsageError("channel_mults must be a non-empty list of positive integers.")
        if self.image_size < 8 or self.image_size % self.downsampling:
            raise UsageError(f"Image size {self.image_size} is not divisible by the U-Net's total "
                             f"downsampling factor {self.downsampling} (or is below 8).")
        if self.base_channels < 1 or self.num_res_blocks < 1 or self.num_heads < 1 or self.groups < 1:
            raise UsageError("base_channels, num_res_blocks, num_heads and groups must be positive.")
        for m in set(self.channel_mults):
            ch = self.base_channels * m
            if ch % self.groups or ch % self.num_heads:
                raise UsageError(f"{ch} channels are not divisible by groups={self.groups} "
                                 f"and num_heads={self.num_heads}.")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError(f"dropout must be in [0, 1), got {self.dropout}.")
        bad = [r for r in self.attention_resolutions + self.cross_attention_resolutions
               if r not in self.resolutions]
        if bad:
            raise UsageError(f"Attention resolution {bad[0]} is not one of the U-Net's feature sizes "
                             f"{list(self.resolutions)}.")

    @property
    def out_channels(self) -> int:
        """C for ε̂ alone, 2C for ε̂ and the variance coefficients v."""
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("channel_mults", "attention_resolutions", "cross_attention_resolutions"):
            d[k] = list(d[k])
        for key in ("learn_sigma", "token_positions"):  # written only when on: older configs stay equal on resume
            if not d[key]:
                del d[key]
        if d["pooled_text"]:  # written only when off, likewise
            del d["pooled_text"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        """A validated config from its JSON form; UsageError with one sentence for any bad field."""
        if not isinstance(d, dict):
            raise UsageError(f"The U-Net config must be a JSON object, got {type(d).__name__}.")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"Unknown U-Net config field(s): {', '.join(sorted(map(str, unknown)))}.")
        for name in _TUPLE_FIELDS:  # lists in JSON; checked here, before __post_init__ converts them
            if name in d and not (isinstance(d[name], (list, tuple)) and all(_is_int(v) for v in d[name])):
                raise UsageError(f"unet.{name} must be a list of integers, got {d[name]!r}.")
        config = cls(**d)
        config.validate()
        return config


# (field, lowest, highest): wide enough for every real model, small enough to allocate.
_INT_BOUNDS = (("image_size", 8, 1024), ("in_channels", 1, 64), ("base_channels", 1, 4096),
               ("num_res_blocks", 1, 16), ("context_dim", 1, 8192), ("num_heads", 1, 256),
               ("groups", 1, 1024))
_TUPLE_FIELDS = ("channel_mults", "attention_resolutions", "cross_attention_resolutions")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of the paper's t (Transformer positional encoding), [N, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv, then FiLM h·(1+scale)+shift from the embedding, → conv; + skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head attention from image features (queries) to themselves or to prompt tokens.

    A learned 2-D positional embedding is added to the queries (and, for self-attention,
    to the keys), so attention can depend on where a pixel is.
    """

    def __init__(self, channels: int, resolution: int, heads: int, groups: int,
                 context_dim: int | None = None, token_positions: int = 0) -> None:
        super().__init__()
        self.heads = heads
        self.cross = context_dim is not None
        self.norm = nn.GroupNorm(groups, channels)
        self.q = nn.Linear(channels, channels)
        kv_in = context_dim if context_dim is not None else channels
        self.k = nn.Linear(kv_in, channels)
        self.v = nn.Linear(kv_in, channels)
        self.out = _zero(nn.Linear(channels, channels))
        self.pos = nn.Parameter(torch.randn(resolution * resolution, channels) * 0.02)
        # keys of prompt tokens also say where the token stands (zero at first: the layer is unchanged)
        self.token_pos = (nn.Parameter(torch.zeros(token_positions, channels))
                          if self.cross and token_positions else None)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # [N, HW, C]
        q = self.q(h) + self.pos
        if self.cross:
            assert context is not None, "cross-attention needs the prompt tokens"
            k, v = self.k(context), self.v(context)  # [N, L, C]
            if self.token_pos is not None:
                k = k + self.token_pos[: context.shape[1]]
        else:
            k, v = self.k(h) + self.pos, self.v(h)
        d = c // self.heads
        q = q.reshape(b, -1, self.heads, d).transpose(1, 2)  # [N, heads, HW, d]
        k = k.reshape(b, -1, self.heads, d).transpose(1, 2)
        v = v.reshape(b, -1, self.heads, d).transpose(1, 2)
        logits = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(d))
        if bias is not None:
            logits = logits + bias  # [N, 1, 1, L]: 0 for tokens, −1e9 for padding
        a = torch.softmax(logits, dim=-1)
        o = torch.matmul(a, v).transpose(1, 2).reshape(b, hgt * wid, c)
        return x + self.out(o).transpose(1, 2).reshape(b, c, hgt, wid)


class Level(nn.Module):
    """ResBlock + optional self-attention + optional cross-attention at one resolution."""

    def __init__(self, cin: int, cout: int, res: int, cfg: UNetConfig, emb_dim: int) -> None:
        super().__init__()
        self.res = ResBlock(cin, cout, emb_dim, cfg.groups, cfg.dropout)
        self.self_attn = (Attention(cout, res, cfg.num_heads, cfg.groups)
                          if res in cfg.attention_resolutions else None)
        self.cross_attn = (Attention(cout, res, cfg.num_heads, cfg.groups, cfg.context_dim, cfg.token_positions)
                           if res in cfg.cross_attention_resolutions else None)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor,
                bias: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        if self.self_attn is not None:  # structural (fixed at construction), not data-dependent
            x = self.self_attn(x)
        if self.cross_attn is not None:
            x = self.cross_attn(x, context, bias)
        return x


class UNet(nn.Module):
    """ε_θ(x_t, t, context, context_mask) for DDPM training and sampling ([ε̂, v] with learn_sigma)."""

    coords: torch.Tensor  # buffer [1, 2, H, W] (register_buffer in __init__)

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        config.validate()
        self.config = cfg = config
        ch0 = cfg.base_channels
        emb_dim = 4 * ch0
        self.time_mlp = nn.Sequential(nn.Linear(ch0, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.text_mlp = (nn.Sequential(nn.Linear(cfg.context_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
                         if cfg.pooled_text else None)
        n = cfg.image_size
        lin = torch.linspace(-1.0, 1.0, n)
        coords = torch.stack(torch.meshgrid(lin, lin, indexing="xy"))[None]  # [1, 2, H, W]: x, y
        self.register_buffer("coords", coords, persistent=False)
        cin = cfg.in_channels + (2 if cfg.coord_channels else 0)
        self.conv_in = nn.Conv2d(cin, ch0, 3, padding=1)

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, ch = [ch0], ch0
        for i, mult in enumerate(cfg.channel_mults):
            res = cfg.resolutions[i]
            for _ in range(cfg.num_res_blocks):
                self.down.append(Level(ch, ch0 * mult, res, cfg, emb_dim))
                ch = ch0 * mult
                skips.append(ch)
            if i < len(cfg.channel_mults) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        low = cfg.resolutions[-1]
        self.mid1 = Level(ch, ch, low, cfg, emb_dim)
        self.mid2 = ResBlock(ch, ch, emb_dim, cfg.groups, cfg.dropout)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(cfg.channel_mults))):
            res = cfg.resolutions[i]
            for _ in range(cfg.num_res_blocks + 1):
                self.up.append(Level(ch + skips.pop(), ch0 * cfg.channel_mults[i], res, cfg, emb_dim))
                ch = ch0 * cfg.channel_mults[i]
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.norm_out = nn.GroupNorm(cfg.groups, ch)
        # Zero-initialised: ε̂ = 0 and v = 0 (Σ_θ halfway between β̃_t and β_t in log space) at step 0.
        self.conv_out = _zero(nn.Conv2d(ch, cfg.out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        mask = context_mask.to(context.dtype)
        emb = self.time_mlp(timestep_embedding(t, cfg.base_channels))
        if self.text_mlp is not None:
            pooled = (context * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
            emb = emb + self.text_mlp(pooled)
        bias = ((1.0 - mask) * _MASK_BIAS)[:, None, None, :]  # [N, 1, 1, L]

        if cfg.coord_channels:
            x = torch.cat([x, self.coords.expand(x.shape[0], -1, -1, -1).to(x.dtype)], dim=1)
        h = self.conv_in(x)
        hs = [h]
        k = 0
        for i in range(len(cfg.channel_mults)):
            for _ in range(cfg.num_res_blocks):
                h = self.down[k](h, emb, context, bias)
                hs.append(h)
                k += 1
            if i < len(cfg.channel_mults) - 1:
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(self.mid1(h, emb, context, bias), emb)
        k = 0
        for j, i in enumerate(reversed(range(len(cfg.channel_mults)))):
            for _ in range(cfg.num_res_blocks + 1):
                h = self.up[k](torch.cat([h, hs.pop()], dim=1), emb, context, bias)
                k += 1
            if i > 0:
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def estimate_flops(model: UNet) -> int:
    """FLOPs of one forward at batch 1: 2 × multiply-adds of convs, linears and attention matmuls."""
    macs = [0]

    def conv_hook(m: nn.Conv2d, inp: tuple, out: torch.Tensor) -> None:
        macs[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m: nn.Linear, inp: tuple, out: torch.Tensor) -> None:
        macs[0] += out.numel() * m.in_features

    def attn_hook(m: Attention, inp: tuple, out: torch.Tensor) -> None:
        _, c, hgt, wid = out.shape
        keys = inp[1].shape[1] if m.cross else hgt * wid
        macs[0] += 2 * hgt * wid * keys * c  # q·kᵀ and a·v

    handles = []
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
        elif isinstance(mod, Attention):
            handles.append(mod.register_forward_hook(attn_hook))
    cfg = model.config
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            model(torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size, device=device),
                  torch.ones(1, dtype=torch.int64, device=device),
                  torch.zeros(1, 32, cfg.context_dim, device=device), torch.ones(1, 32, device=device))
    finally:
        for h in handles:
            h.remove()
    return 2 * macs[0]
