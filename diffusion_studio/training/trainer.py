"""The DDPM trainer: Algorithm 1 of Ho et al. (2020) with text conditioning.

repeat:  x_0 ~ data,  t ~ U{1..T},  ε ~ N(0, I)
         x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε                         (closed form of q(x_t | x_0))
         gradient step on ‖ε − ε_θ(x_t, t, context, mask)‖²
(with unet.learn_sigma: on L_hybrid = L_simple + λ·T·L_t, Improved DDPM §3.1, see training/vlb.py)
with AdamW, linear LR warm-up, gradient clipping, an EMA of the weights, captions dropped
to "" with probability p_uncond (classifier-free guidance), checkpoints that resume
exactly, and sample grids drawn by the app's own sampling loop.

Every random draw of update n comes from a generator seeded by (seed, n) and batch n of
the data stream is a pure function of n, so a resumed run repeats the straight run. Under
DDP (training/ddp.py) every rank draws the randoms of the whole global batch and keeps its
own slice, so W ranks compute the same update as one process (up to float summation order).
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from diffusion_studio.core.schedule import Schedule, make_schedule
from diffusion_studio.errors import Cancelled, UsageError
from diffusion_studio.training import ddp
from diffusion_studio.training.captions import CaptionCache, PromptEncoder
from diffusion_studio.training.checkpoints import (
    Checkpoint,
    load_checkpoint,
    optimizer_from_flat,
    restore_rng,
    save_checkpoint,
)
from diffusion_studio.training.config import TrainConfig
from diffusion_studio.training.datasets import describe_stream, make_stream
from diffusion_studio.training.ema import EMA
from diffusion_studio.training.events import EventCallback, EventLog
from diffusion_studio.training.resume import EVENTS_FILE, RunFolder, RunStart, plan_run, share_checkpoint
from diffusion_studio.training.unet import UNet, count_parameters, estimate_flops
from diffusion_studio.training.vlb import VariationalBound, hybrid_loss

NUM_BUCKETS = 10


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    stopped: bool
    checkpoint: Path | None
    metrics: dict[str, Any]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but PyTorch sees no CUDA GPU.")
    return torch.device(name)


def schedule_tensors(schedule: Schedule, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The one numpy→torch bridge: (√ᾱ_t, √(1−ᾱ_t)) as float32 tensors indexed [t − 1]."""
    return (torch.from_numpy(np.asarray(schedule.sqrt_alphas_cumprod, np.float32)).to(device),
            torch.from_numpy(np.asarray(schedule.sqrt_one_minus_alphas_cumprod, np.float32)).to(device))


def lr_at(config: TrainConfig, update: int) -> float:
    """LR for 0-based update n: linear warm-up over warmup_steps, then constant or cosine to 10%."""
    n = update + 1
    if config.warmup_steps and n <= config.warmup_steps:
        return config.lr * n / config.warmup_steps
    if config.lr_schedule == "cosine":
        span = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (n - config.warmup_steps) / span)
        return config.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))
    return config.lr


def step_generator(seed: int, update: int) -> torch.Generator:
    """CPU generator for every random draw of one update, seeded by (seed, update)."""
    state = np.random.SeedSequence([seed, 0x5EED, update]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def timestep_buckets(t: torch.Tensor, T: int) -> torch.Tensor:
    """Bucket index 0..9 of each t ∈ {1..T} (bucket b holds t ∈ (bT/10, (b+1)T/10])."""
    return ((t - 1) * NUM_BUCKETS // T).clamp(0, NUM_BUCKETS - 1)


class Trainer:
    """One training run in RUN_DIR; `run()` trains to config.steps or until stopped.

    `dist` places this process in a DDP group (ddp.init_distributed); `config.batch_size`
    is the global batch. Only rank 0 writes to RUN_DIR and emits events.
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path, *, resume: bool = False,
                 text_encoder: PromptEncoder | None = None, listeners: list[EventCallback] | None = None,
                 echo: TextIO | None = None, dist: ddp.DistContext | None = None) -> None:
        config.validate()
        self.dist = ctx = dist or ddp.SINGLE
        self.run_dir = Path(run_dir)
        # Rank 0 checks RUN_DIR and reads the checkpoint; every rank adopts its config.
        # Everything is checked before the first byte is written to RUN_DIR.
        start: RunStart | None = _on_main(ctx, lambda: plan_run(self.run_dir, config, resume))
        checkpoint = start.checkpoint if start is not None else None
        # A new run may start from another run's weights (fine-tuning); checked before RUN_DIR is written.
        # Every rank joins the call (only rank 0 knows whether a checkpoint resumes the run).
        init = _on_main(ctx, lambda: load_init_weights(config) if checkpoint is None else None)
        self.notes: list[str] = [start.note] if start is not None and start.note else []
        if ctx.distributed:
            config = TrainConfig.from_dict(ddp.broadcast_json(ctx, config.to_dict()))
        self.config = cfg = config
        self.device = ddp.rank_device(ctx, resolve_device(cfg.device))
        self.bf16 = bool(cfg.bf16 and self.device.type == "cuda" and torch.cuda.is_bf16_supported())
        self.shard = ddp.shard_size(cfg.batch_size, ctx.world_size)
        self.stream = _agreed(ctx, lambda: make_stream(cfg.dataset, cfg.image_size, self.shard, cfg.seed,
                                                       ctx.rank, ctx.world_size, cfg.hflip,
                                                       cfg.two_shape_share))
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)

        torch.manual_seed(cfg.seed)
        self.model = UNet(cfg.unet).to(self.device)
        self.ema = EMA(self.model, cfg.ema_decay)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.schedule = make_schedule(cfg.schedule, cfg.T)
        self.sqrt_ac, self.sqrt_1m_ac = schedule_tensors(self.schedule, self.device)
        # Improved DDPM: L_t of the variational bound trains the learned variance (None: fixed Σ).
        self.vlb = VariationalBound(self.schedule, self.device) if cfg.unet.learn_sigma else None
        self.vlb_batch: torch.Tensor | None = None  # T·L_t per example of the last update (bits/dim)
        self.step = 0
        checkpoint = share_checkpoint(ctx, checkpoint)
        if checkpoint is not None:
            self._restore(checkpoint)
        elif init is not None:  # rank 0 only; DDP broadcasts rank 0's weights to the others
            own = self.model.state_dict()  # new token-position keys and attention layers keep their init
            weights = {**own, **{k: v for k, v in init.ema.items() if k in own}}
            self.model.load_state_dict(weights)
            self.ema.load_state_dict(weights)
            added = sorted(set(cfg.unet.cross_attention_resolutions)
                           - set(init.unet_config.cross_attention_resolutions), reverse=True)
            new_positions = cfg.unet.token_positions and not init.unet_config.token_positions
            changes = (["new zero token-position keys"] if new_positions else []) + (
                ["new cross-attention at " + ", ".join(f"{r}²" for r in added) + " (zero output)"] if added else []) + (
                ["its pooled-prompt FiLM weights left out"] if any(k not in own for k in init.ema) else [])
            self.notes.append(f"started from the EMA weights of {init.path} (step {init.step})"
                              + (f", with {' and '.join(changes)}." if changes else "."))
        self.net: nn.Module = self.model  # what the forward pass runs: the DDP wrapper under DDP
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        if text_encoder is None:
            from diffusion_studio.inference.text_encoder import TextEncoder

            text_encoder = TextEncoder(max_tokens=cfg.max_tokens, cache_size=256)  # CaptionCache keeps them
        if int(text_encoder.max_tokens) != cfg.max_tokens:
            raise UsageError(f"The text encoder uses {text_encoder.max_tokens} tokens but the "
                             f"config asks for {cfg.max_tokens}.")
        self.text = CaptionCache(text_encoder)
        self.parameters = count_parameters(self.model)
        self.flops = estimate_flops(self.model)
        meta = {"text_encoder": {"sha256": getattr(text_encoder, "sha256", None),
                                 "tokenizer_sha256": getattr(text_encoder, "tokenizer_sha256", None),
                                 "max_tokens": cfg.max_tokens, "embedding_dim": self.text.embedding_dim},
                "parameters": self.parameters, "flops_per_forward": self.flops}
        self.config_record = {**cfg.to_dict(), **meta}
        self.folder: RunFolder | None = None
        if ctx.is_main:
            self.folder = RunFolder(self.run_dir)
            self.folder.create(json.dumps(self.config_record, indent=2))
            if self.folder.removed_temp_files:
                self.notes.append(f"removed {len(self.folder.removed_temp_files)} temp file(s) that an "
                                  "interrupted write left in the run folder.")
            try:
                self.events = EventLog(self.run_dir / EVENTS_FILE, echo=echo, listeners=listeners)
            except UsageError:
                self.folder.discard_if_unused()
                raise
        else:
            self.events = EventLog(None)  # rank 0 speaks for the group
        self._stop = threading.Event()
        self._metrics: dict[str, Any] = {}
        self._checkpoint_step = self.step

    # ---- set-up ---------------------------------------------------------------------------

    def _restore(self, ck: Checkpoint) -> None:
        try:
            self.model.load_state_dict(ck.model)
            self.ema.load_state_dict(ck.ema)
        except RuntimeError:
            raise UsageError(f"The weights in {ck.path} do not fit the configured U-Net.") from None
        optimizer_from_flat(self.optimizer, ck.optim, ck.optim_groups)
        restore_rng(ck.rng, ck.rng.get("torch"))
        self.step = ck.step

    # ---- one update (Algorithm 1) ---------------------------------------------------------

    def train_step(self) -> tuple[float, torch.Tensor, torch.Tensor]:
        """One gradient update; returns (loss, per-example loss, t) of the batch."""
        cfg, n = self.config, self.step
        x0, captions = self.stream.batch(n)  # this rank's share of global batch n
        # The draws of the whole global batch B, of which this rank keeps its own slice.
        g, B, mine = step_generator(cfg.seed, n), cfg.batch_size, slice(self.dist.rank * self.shard,
                                                                        (self.dist.rank + 1) * self.shard)
        drop = (torch.rand(B, generator=g) < cfg.p_uncond)[mine]
        captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
        t = torch.randint(1, cfg.T + 1, (B,), generator=g, dtype=torch.int64)[mine]
        eps = torch.randn((B, *x0.shape[1:]), generator=g)[mine]
        context, mask = self.text.encode(captions)

        dev = self.device
        x0, t, eps = x0.to(dev), t.to(dev), eps.to(dev)
        a = self.sqrt_ac[t - 1].view(-1, 1, 1, 1)
        s = self.sqrt_1m_ac[t - 1].view(-1, 1, 1, 1)
        x_t = a * x0 + s * eps  # x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε
        self.model.train()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
            output = self.net(x_t, t, torch.from_numpy(context).to(dev), torch.from_numpy(mask).to(dev))
        # ‖ε − ε_θ‖² / dim per example; with a learned Σ_θ also T·L_t and L_hybrid (training/vlb.py)
        per_example, vlb, objective = hybrid_loss(output, eps, x0, x_t, t, self.vlb, cfg.vlb_weight)
        loss = per_example.mean()  # L_simple

        lr = lr_at(cfg, n)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()  # under DDP the gradients are averaged over the ranks here
        nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model, n)
        self.step = n + 1
        self.vlb_batch = None if vlb is None else vlb.detach().cpu()
        return float(loss.detach()), per_example.detach().cpu(), t.cpu()

    # ---- the loop -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the loop to checkpoint and return after the current update (thread/signal safe)."""
        self._stop.set()

    def run(self) -> TrainResult:
        cfg, main = self.config, self.dist.is_main
        handlers = self._install_signals()
        start = self.step
        last_ck: Path | None = None
        try:
            note: dict[str, Any] = {"note": " ".join(self.notes)} if self.notes else {}
            self.events.emit("start", step=start, steps=cfg.steps, run_dir=str(self.run_dir),
                             parameters=self.parameters, flops_per_forward=self.flops,
                             device=str(self.device), bf16=self.bf16, resumed=start > 0,
                             world_size=self.dist.world_size, dataset=describe_stream(self.stream, cfg.dataset),
                             **note)
            if main and cfg.sample_every and start == 0:
                self._sample_grid()  # step 0 (noise): the user sees the first grid at once, then one per interval
            loss_sum, n_logged, busy, stopping = 0.0, 0, 0.0, False
            b_sum, b_cnt = torch.zeros(NUM_BUCKETS, dtype=torch.float64), torch.zeros(NUM_BUCKETS)
            vlb_sum = torch.zeros(2, dtype=torch.float64)  # (Σ T·L_t, examples) since the last log
            while self.step < cfg.steps and not stopping:
                t0 = time.perf_counter()
                loss, per_ex, t = self.train_step()
                busy += time.perf_counter() - t0
                loss, stop_asked = self._sync_step(loss)
                stopping = stop_asked if self.dist.distributed else self._stop.is_set()
                if not math.isfinite(loss):
                    raise UsageError(f"The loss became {loss} at step {self.step}; lower --lr and start again.")
                loss_sum, n_logged = loss_sum + loss, n_logged + 1
                b = timestep_buckets(t, cfg.T)
                b_sum += torch.bincount(b, weights=per_ex.double(), minlength=NUM_BUCKETS)
                b_cnt += torch.bincount(b, minlength=NUM_BUCKETS)
                if self.vlb_batch is not None:
                    vlb_sum += torch.tensor([float(self.vlb_batch.double().sum()), self.vlb_batch.numel()])
                last = self.step == cfg.steps
                if self.step % cfg.log_every == 0 or last or stopping:  # the same steps on every rank
                    totals = ddp.all_reduce_sum(self.dist, torch.cat([b_sum, b_cnt.double(), vlb_sum]))
                    per_step = busy / n_logged
                    self._metrics = {
                        "loss": loss_sum / n_logged,
                        "bucket_loss": [float(s / c) if c else None
                                        for s, c in zip(totals[:NUM_BUCKETS], totals[NUM_BUCKETS:])],
                        "lr": lr_at(cfg, self.step - 1),
                        "images_per_s": cfg.batch_size / per_step,
                        "steps_per_min": 60.0 / per_step,
                    }
                    if self.vlb is not None:  # "loss" stays L_simple; L_vlb (bits/dim) beside it
                        self._metrics["loss_vlb"] = float(totals[-2] / totals[-1]) if totals[-1] else None
                    self.events.emit("progress", step=self.step, steps=cfg.steps,
                                     eta_s=(cfg.steps - self.step) * per_step, **self._metrics)
                    loss_sum, n_logged, busy = 0.0, 0, 0.0
                    b_sum.zero_(), b_cnt.zero_(), vlb_sum.zero_()
                    if not self.dist.distributed:
                        stopping = self._stop.is_set()  # a listener may have asked just now
                if main and cfg.sample_every and (self.step % cfg.sample_every == 0 or last):
                    self._sample_grid()
                if main and (self.step % cfg.checkpoint_every == 0 or last or stopping):
                    last_ck = self._checkpoint()
                if not self.dist.distributed:
                    stopping = self._stop.is_set()
            stopped = self.step < cfg.steps
            if main and stopped and self.step > start and self._checkpoint_step != self.step:
                last_ck = self._checkpoint()  # the stop arrived after this step's checkpoint check
            self.events.emit("stopped" if stopped else "done", step=self.step, done=not stopped,
                             checkpoint=str(last_ck) if last_ck else None, **self._metrics)
            return TrainResult(self.run_dir, self.step, stopped, last_ck, dict(self._metrics))
        except BaseException as exc:
            self.events.emit("error", best_effort=True, step=self.step, error=str(exc) or type(exc).__name__)
            self.events.close()
            if self.folder is not None:
                self.folder.discard_if_unused()  # e.g. a full disk before the first checkpoint
            raise
        finally:
            self._restore_signals(handlers)
            self.events.close()

    def _sync_step(self, loss: float) -> tuple[float, bool]:
        """(mean loss of the global batch, whether any rank was asked to stop); one all-reduce."""
        if not self.dist.distributed:
            return loss, self._stop.is_set()
        if ddp.stop_file_requested():
            self._stop.set()
        total = ddp.all_reduce_sum(self.dist, torch.tensor([loss, float(self._stop.is_set())], dtype=torch.float64))
        return float(total[0]) / self.dist.world_size, bool(total[1] > 0)

    def _checkpoint(self) -> Path:
        cfg = self.config
        path = save_checkpoint(
            self.run_dir, self.step, model=self.model, ema=self.ema.model, optimizer=self.optimizer,
            config=self.config_record, metrics=self._metrics, keep_last=cfg.keep_last,
            scheduler={"kind": cfg.lr_schedule, "warmup_steps": cfg.warmup_steps, "base_lr": cfg.lr,
                       "last_update": self.step - 1, "lr": lr_at(cfg, max(0, self.step - 1))})
        self._checkpoint_step = self.step
        self.events.emit("checkpoint", step=self.step, checkpoint=str(path))
        return path

    def _sample_grid(self) -> Path | None:
        """The EMA and the raw weights' grids of the fixed prompts (same seed); the EMA grid's path."""
        from diffusion_studio.training.samples import grid_columns, write_sample_grids

        cfg = self.config
        try:
            path, raw_path = write_sample_grids(
                self.run_dir, self.step, self.ema.model, self.model, self.schedule, self.text.encode,
                cfg.sample_prompts, image_size=cfg.image_size, channels=cfg.unet.in_channels,
                steps=cfg.sample_steps, guidance=cfg.sample_guidance, seed=cfg.seed, bf16=self.bf16,
                should_stop=self._stop.is_set)
        except Cancelled:
            return None
        self.events.emit("sample", step=self.step, sample_grid=str(path), raw_sample_grid=str(raw_path),
                         prompts=list(cfg.sample_prompts), grid_columns=grid_columns(len(cfg.sample_prompts)))
        return path

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: self._stop.set())
        return previous

    @staticmethod
    def _restore_signals(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def load_init_weights(config: TrainConfig) -> Checkpoint | None:
    """The checkpoint named by `config.init_from` (None when empty); UsageError unless its
    U-Net has exactly the configured architecture."""
    if not config.init_from:
        return None
    ck = load_checkpoint(Path(config.init_from).expanduser())
    # Three changes are allowed: adding token-position keys or cross-attention at more feature sizes
    # (both start at zero output, so the new U-Net computes what the old one did) and dropping the
    # pooled prompt from FiLM (its weights are left out).
    source = ck.unet_config
    added = set(config.unet.cross_attention_resolutions) - set(source.cross_attention_resolutions)
    target = replace(config.unet,
                     token_positions=0 if source.token_positions == 0 else config.unet.token_positions,
                     pooled_text=True if source.pooled_text else config.unet.pooled_text,
                     cross_attention_resolutions=tuple(r for r in config.unet.cross_attention_resolutions
                                                       if r not in added))
    if target != source:
        raise UsageError(f"--init-from {config.init_from}: its U-Net differs from the configured one "
                         "(the architecture must match to start from its weights).")
    return ck


def train(config: TrainConfig, run_dir: str | Path, *, resume: bool = False,
          listeners: list[EventCallback] | None = None, echo: TextIO | None = None,
          text_encoder: PromptEncoder | None = None) -> TrainResult:
    """Build a Trainer and run it (what the CLI and the GUI's training process call)."""
    return Trainer(config, run_dir, resume=resume, text_encoder=text_encoder,
                   listeners=listeners, echo=echo).run()



def _on_main(ctx: ddp.DistContext, fn: Callable[[], Any]) -> Any:
    """fn() on rank 0 only (others get None); if it fails, every rank raises."""
    result, failure, message = None, None, None
    if ctx.is_main:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the others know
            failure, message = exc, [isinstance(exc, UsageError), str(exc) or type(exc).__name__]
    message = ddp.broadcast_json(ctx, message)
    if failure is not None:
        raise failure
    if message is not None:
        raise (UsageError if message[0] else RuntimeError)(message[1])
    return result


def _agreed(ctx: ddp.DistContext, fn: Callable[[], Any]) -> Any:
    """fn() on every rank; if it fails on any rank, every rank raises (none waits forever)."""
    try:
        result, failure = fn(), None
    except Exception as exc:  # noqa: BLE001 - re-raised below, after the others know
        result, failure = None, exc
    failed = ddp.all_reduce_sum(ctx, torch.tensor([float(failure is not None)], dtype=torch.float64))
    if failure is not None:
        raise failure
    if failed[0] > 0:
        raise UsageError("Another training process could not start; see its message.")
    return result
