"""Data-parallel training through torchrun + DistributedDataParallel.

Launch (both work):
  diffusion-studio train --nproc 2 ...                       (spawns torch.distributed.run)
  torchrun --nproc-per-node 2 -m diffusion_studio train ...   (or any torchrun multi-node rendezvous)

`--batch-size` is the GLOBAL batch: each of the W ranks trains on its own disjoint share of
b = B / W examples of every global batch, DDP averages the gradients, so the update equals
a one-process update on the whole batch (up to float summation order). Every rank keeps
its own identical EMA; only rank 0 logs, writes events, sample grids and checkpoints. The
run state (config, step, weights, EMA, optimizer) is read by rank 0 and broadcast, so the
run folder only has to be visible to rank 0. Backend: nccl on CUDA, gloo on CPU.

Tensors and JSON cross between ranks as raw bytes in tensors: nothing is pickled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from diffusion_studio.errors import UsageError

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
STOP_FILE_ENV = "DIFFUSION_STUDIO_STOP_FILE"  # set by the --nproc launcher for its ranks


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank r of W (LOCAL_RANK picks the GPU); W = 1 without DDP."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Device of tensors sent between ranks (nccl needs CUDA tensors, gloo CPU ones)."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


SINGLE = DistContext()


def under_torchrun() -> bool:
    """True inside a process started by torchrun (its rank variables are set)."""
    return all(name in os.environ for name in TORCHRUN_ENV)


def init_distributed(device: str, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group that torchrun set up (env://); a single process needs nothing."""
    if not under_torchrun():
        return SINGLE
    try:
        rank, world, local = (int(os.environ[name]) for name in TORCHRUN_ENV)
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers.") from None
    if world <= 1:
        return SINGLE
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise UsageError(f"Local rank {local} has no GPU: PyTorch sees {torch.cuda.device_count()}.")
        torch.cuda.set_device(local)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return DistContext(rank=rank, world_size=world, local_rank=local, backend=backend)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(ctx: DistContext, device: torch.device) -> torch.device:
    """The device of this rank: its own GPU (LOCAL_RANK) on CUDA, the CPU otherwise."""
    if device.type == "cuda" and ctx.distributed:
        return torch.device("cuda", ctx.local_rank)
    return device


def shard_size(batch_size: int, world_size: int) -> int:
    """Per-rank share b of the global batch B (B must split evenly over the W ranks)."""
    if batch_size % world_size:
        raise UsageError(f"The global batch size {batch_size} does not split evenly over "
                         f"{world_size} processes; use a multiple of {world_size}.")
    return batch_size // world_size


def check_gpus(device: str, nproc: int) -> None:
    """On CUDA every process of this machine needs its own GPU."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        count = torch.cuda.device_count()
        if nproc > count:
            raise UsageError(f"--nproc {nproc} needs {nproc} GPUs but PyTorch sees {count}; "
                             "use at most one process per GPU.")


# ---- collectives (no pickle: JSON as bytes, tensors flattened per dtype) -------------------

def broadcast_json(ctx: DistContext, value: Any = None) -> Any:
    """Rank 0's JSON-serialisable `value` on every rank."""
    if not ctx.distributed:
        return value
    dev = ctx.comm_device
    data = json.dumps(value).encode("utf-8") if ctx.is_main else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=dev)
    dist.broadcast(size, src=0)
    buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev) if ctx.is_main
           else torch.empty(int(size.item()), dtype=torch.uint8, device=dev))
    dist.broadcast(buf, src=0)
    return value if ctx.is_main else json.loads(buf.cpu().numpy().tobytes().decode("utf-8"))


def broadcast_tensors(ctx: DistContext, tensors: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Rank 0's dict of tensors on every rank (CPU tensors; one broadcast per dtype)."""
    local = dict(tensors or {})
    if not ctx.distributed:
        return local
    meta = broadcast_json(ctx, [[k, list(v.shape), str(v.dtype).removeprefix("torch.")]
                                for k, v in local.items()] if ctx.is_main else None)
    out: dict[str, torch.Tensor] = {}
    for dtype_name in sorted({m[2] for m in meta}):
        dtype = getattr(torch, dtype_name)
        group = [m for m in meta if m[2] == dtype_name]
        numel = [int(torch.Size(shape).numel()) for _, shape, _ in group]
        if ctx.is_main:
            flat = torch.cat([local[k].detach().reshape(-1).cpu() for k, _, _ in group]).to(ctx.comm_device)
        else:
            flat = torch.empty(sum(numel), dtype=dtype, device=ctx.comm_device)
        dist.broadcast(flat, src=0)
        for (name, shape, _), piece in zip(group, torch.split(flat.cpu(), numel)):
            out[name] = piece.reshape(shape).clone()
    return out


def all_reduce_sum(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over the ranks (a float64 CPU tensor in and out)."""
    if not ctx.distributed:
        return values
    buf = values.to(ctx.comm_device)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.cpu()


# ---- the --nproc launcher ------------------------------------------------------------------

def torchrun_command(child_args: Sequence[str], nproc: int) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc-per-node N -m diffusion_studio ARGS`."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "diffusion_studio", *child_args]


def stop_file_requested() -> bool:
    """True once the --nproc launcher asked the ranks to stop (it creates this file)."""
    path = os.environ.get(STOP_FILE_ENV)
    return bool(path and os.path.exists(path))


def launch(child_args: Sequence[str], nproc: int, threads: int | None = None) -> int:
    """Run `diffusion-studio ARGS` in `nproc` processes under torchrun; returns its exit code.

    torchrun runs in its own session, so Ctrl-C (SIGINT), SIGTERM or SIGHUP reach only this
    launcher, which then creates a stop file that the ranks poll between updates: they agree
    to stop after the same update, rank 0 checkpoints, and all exit cleanly. A second signal
    terminates torchrun (which gives the ranks 30 s before killing them).
    """
    if under_torchrun():
        raise UsageError("--nproc cannot be used inside torchrun; torchrun already started the processes.")
    env = dict(os.environ)
    per_rank = threads or max(1, (os.cpu_count() or 1) // nproc)
    env.setdefault("OMP_NUM_THREADS", str(per_rank))  # torchrun would otherwise force 1 with a warning
    with tempfile.TemporaryDirectory(prefix="diffusion-studio-") as folder:
        stop_file = Path(folder) / "stop"
        env[STOP_FILE_ENV] = str(stop_file)
        process = subprocess.Popen(torchrun_command(child_args, nproc), env=env, start_new_session=True)

        def on_signal(*_: Any) -> None:
            if stop_file.exists():
                process.send_signal(signal.SIGTERM)
            else:
                stop_file.touch()

        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {sig: signal.signal(sig, on_signal) for sig in handled}
        try:
            return process.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if process.poll() is None:  # this launcher is being torn down: take torchrun with it
                process.terminate()
