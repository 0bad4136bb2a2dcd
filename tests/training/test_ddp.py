"""DDP on CPU (gloo, 2 processes): the real `diffusion-studio train --nproc 2` equals one process.

Why equality holds: the global batch is split into disjoint halves, each rank draws the
random numbers of the whole global batch and keeps its half, and DDP averages the two
half-batch gradients, which is the full-batch gradient up to float summation order
(~1e-7 relative). AdamW normalises every update to about lr, so after a few steps the
weights may differ by a few float32 ulps; measured 1.5e-8, asserted below 1e-6.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from diffusion_studio.cli import main
from diffusion_studio.training.checkpoints import list_checkpoints, load_checkpoint
from diffusion_studio.training.events import read_events

ARGS = ["--preset", "cpu-quick", "--image-size", "16", "--batch-size", "4", "--threads", "1",
        "--sample-every", "0"]
REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _train(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "diffusion_studio", "train", *args], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # two torchrun launches of 2 processes; the collectives below are the fast DDP test
def test_two_gloo_processes_train_the_same_weights_as_one_and_resume(tmp_path, capsys):
    ddp = tmp_path / "ddp"
    first = _train(*ARGS, "--out", str(ddp), "--steps", "3", "--json", "--nproc", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    lines = [json.loads(line) for line in first.stdout.splitlines()]
    assert [e["event"] for e in lines] == ["start", "progress", "checkpoint", "done"]  # rank 0 only
    assert lines[0]["world_size"] == 2 and lines[-1]["step"] == 3
    second = _train(*ARGS, "--out", str(ddp), "--steps", "6", "--resume", "--json", "--nproc", "2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads(second.stdout.splitlines()[0])["resumed"] is True

    one = tmp_path / "one"  # the same two launches in one process (in-process CLI)
    assert main(["train", *ARGS, "--out", str(one), "--steps", "3", "--json"]) == 0
    assert main(["train", *ARGS, "--out", str(one), "--steps", "6", "--resume", "--json"]) == 0
    reference = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    a, b = load_checkpoint(one), load_checkpoint(ddp)
    assert a.step == b.step == 6
    for group in ("model", "ema", "optim"):
        ta, tb = getattr(a, group), getattr(b, group)
        assert set(ta) == set(tb) and ta
        for name in ta:
            torch.testing.assert_close(tb[name], ta[name], rtol=0, atol=1e-6, msg=f"{group}.{name}")
    # the logged loss is the mean over the global batch (all-reduced), as in one process
    done = [json.loads(p.stdout.splitlines()[-1]) for p in (first, second)]
    expected = [e for e in reference if e["event"] == "done"]
    for got, want in zip(done, expected, strict=True):
        assert abs(got["loss"] - want["loss"]) < 1e-6
        assert [g is None for g in got["bucket_loss"]] == [w is None for w in want["bucket_loss"]]
        assert all(abs(g - w) < 1e-6 for g, w in zip(got["bucket_loss"], want["bucket_loss"]) if w is not None)
    # rank 0 alone wrote the run folder: one start per launch, checkpoints at 3 and 6
    events = read_events(ddp / "events.jsonl")
    assert [e["event"] for e in events].count("start") == 2
    assert [s for s, _ in list_checkpoints(ddp)] == [3, 6]


_BROADCAST_SCRIPT = """
import json, sys, torch
from pathlib import Path
from diffusion_studio.errors import UsageError
from diffusion_studio.training import ddp
from diffusion_studio.training.checkpoints import Checkpoint
from diffusion_studio.training.resume import share_checkpoint
from diffusion_studio.training.trainer import _agreed, _on_main
from diffusion_studio.training.unet import UNetConfig

ctx = ddp.init_distributed("cpu")
out = {"rank": ctx.rank, "world": ctx.world_size, "backend": ctx.backend}
out["json"] = ddp.broadcast_json(ctx, {"a": [1, 2.5, "ü"]} if ctx.is_main else None)
ck = None
if ctx.is_main:
    g = torch.Generator().manual_seed(0)
    ck = Checkpoint(config={"unet": UNetConfig().to_dict(), "lr": 0.1}, unet_config=UNetConfig(), step=7,
                    model={"w": torch.randn(3, 4, generator=g)}, ema={"w": torch.randn(3, 4, generator=g)},
                    metrics={"loss": 0.5}, run_dir=Path("/run"), path=Path("/run/x.safetensors"),
                    optim={"0.step": torch.tensor(7.0), "0.exp_avg": torch.randn(3, 4, generator=g)},
                    optim_groups=[{"lr": 0.1}], scheduler={"kind": "constant"},
                    rng={"python": [3, [1, 2], None], "torch": torch.arange(5, dtype=torch.uint8)})
got = share_checkpoint(ctx, ck)
out["ck"] = {"step": got.step, "config": got.config, "metrics": got.metrics, "groups": got.optim_groups,
             "rng_python": got.rng["python"], "rng_torch": got.rng["torch"].tolist(),
             "dtypes": [str(got.optim["0.step"].dtype), str(got.rng["torch"].dtype)],
             "tensors": {k: v.tolist() for k, v in {**got.model, **got.ema, **got.optim}.items()}}
out["sum"] = ddp.all_reduce_sum(ctx, torch.tensor([ctx.rank + 1.0], dtype=torch.float64)).tolist()
def fail_on_main():
    raise UsageError("rank 0 says no.")
try:
    _on_main(ctx, fail_on_main)
except UsageError as exc:
    out["on_main"] = str(exc)
def fail_on_one():
    if ctx.rank == 1:
        raise UsageError("rank 1 says no.")
try:
    _agreed(ctx, fail_on_one)
except UsageError as exc:
    out["agreed"] = str(exc)
Path(sys.argv[1], f"rank{ctx.rank}.json").write_text(json.dumps(out))
ddp.shutdown(ctx)
"""


def test_collectives_share_rank0_state_without_pickle(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(_BROADCAST_SCRIPT))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(script), str(tmp_path)], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2 and r1["backend"] == "gloo"
    assert r1["json"] == {"a": [1, 2.5, "ü"]}
    assert r1["ck"] == r0["ck"] and r1["ck"]["step"] == 7 and r1["ck"]["rng_torch"] == [0, 1, 2, 3, 4]
    assert r1["ck"]["dtypes"] == ["torch.float32", "torch.uint8"]
    assert r0["sum"] == r1["sum"] == [3.0]
    assert r0["on_main"] == r1["on_main"] == "rank 0 says no."
    assert r1["agreed"] == "rank 1 says no." and "Another training process" in r0["agreed"]
