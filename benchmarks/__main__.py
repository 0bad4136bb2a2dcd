"""`python -m benchmarks [--quick] [--out results.json] [--gpu] [--markdown results.json]`.

Runs every CPU table in one process (each comparison side by side), prints them as markdown and
writes the JSON (machine info included). --quick is a smoke run (tiny batches, 1 repeat, no
warm-up, short sampling): it checks that everything runs, its numbers mean nothing.
--gpu adds the GPU table (or says why it cannot run). --markdown FILE renders a saved JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

SECTIONS = ("network", "ort_options", "e2e", "training", "startup", "preview")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tiny and fast, numbers meaningless")
    p.add_argument("--out", type=Path, help="write the result JSON here")
    p.add_argument("--gpu", action="store_true", help="the GPU table (CUDA vs CPU, IO binding, fp16, CUDA graphs)")
    p.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these CPU tables")
    p.add_argument("--no-app", action="store_true", help="skip the app start-up row (no Qt platform)")
    p.add_argument("--markdown", type=Path, metavar="RESULTS.json", help="print a saved result as markdown and exit")
    p.add_argument("--same-process", action="store_true",
                   help="run the tables in this process (default for --quick and --gpu: a fresh process per table)")
    p.add_argument("--torch-threads", type=int, default=0, help="torch intra-op threads (0: one per physical core)")
    return p.parse_args(argv)


def run_isolated(args: argparse.Namespace) -> dict[str, Any]:
    """Every table in a fresh process, merged into one result: thread pools that one table leaves
    spinning (ONNX Runtime's, torch's OpenMP) took ~25 % off the next table in a shared process."""
    import subprocess
    import tempfile

    result: dict[str, Any] | None = None
    for section in args.only or SECTIONS:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "section.json"
            command = [sys.executable, "-m", "benchmarks", "--only", section, "--out", str(out), "--same-process"]
            if args.no_app:
                command.append("--no-app")
            if args.torch_threads:
                command += ["--torch-threads", str(args.torch_threads)]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            part = json.loads(out.read_text())
        if result is None:
            result = part
        else:
            result[section] = part[section]
            if section == "network":
                result["matmul_peak"] = part["matmul_peak"]
    assert result is not None
    from benchmarks import report

    result["targets"] = report.judge_targets(result)
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import machine, peers, report, timing

    quick = args.quick
    timing.WARMUP_CAP[0] = 0 if quick else None
    repeat = 1 if quick else 20
    from diffusion_studio.inference.providers import physical_cores

    torch_threads = args.torch_threads or (1 if quick else physical_cores())
    try:
        import torch

        torch.set_num_threads(torch_threads)
    except ImportError:
        torch_threads = None
    result: dict[str, Any] = {
        "schema": 1,
        "quick": quick,
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine.machine_info(),
        "settings": {"repeat": repeat, "torch_threads": torch_threads},
    }
    sections = args.only or (() if args.gpu else SECTIONS)
    if sections:
        result["matmul_peak"] = machine.matmul_peak_gflops(256 if quick else 1024, repeat=2 if quick else 10)
        bundle = peers.load_bundle("cpu")
    if "network" in sections:
        from benchmarks import network

        result["network"] = network.run(bundle, result["matmul_peak"]["gflops"],
                                        batches=(1, 2) if quick else (1, 2, 8), repeat=repeat)
    if "ort_options" in sections:
        from benchmarks import ort_options

        result["ort_options"] = ort_options.run(bundle, repeat=repeat, int8=not quick)
    if "e2e" in sections:
        from benchmarks import e2e

        result["e2e"] = e2e.run(bundle, repeat=repeat if quick else 7, steps=2 if quick else e2e.STEPS)
    if "training" in sections:
        from benchmarks import training

        result["training"] = training.run(batch=4 if quick else training.BATCH, repeat=1 if quick else 7)
    if "startup" in sections:
        from benchmarks import startup

        result["startup"] = {"cli": startup.cli_seconds(1 if quick else 5, steps=2 if quick else None, warm=not quick)}
        if not args.no_app:
            result["startup"]["app"] = startup.app_seconds(1 if quick else 5, warm=not quick)
    if "preview" in sections:
        from benchmarks import preview

        result["preview"] = preview.run(bundle, repeat=repeat if quick else 7, steps=2 if quick else 20)
    if args.gpu:
        from benchmarks import gpu

        result["gpu"] = gpu.run(repeat=2 if quick else 20, batches=(1, 8) if quick else gpu.BATCHES)
    if sections:
        result["targets"] = report.judge_targets(result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from benchmarks import report

    if args.markdown is not None:
        try:
            result = json.loads(args.markdown.read_text())
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"error: cannot read {args.markdown}: {exc}\n")
            return 2
        print(report.markdown(result))
        return 0
    isolate = not (args.quick or args.gpu or args.same_process) and len(args.only or SECTIONS) > 1
    result = run_isolated(args) if isolate else run(args)
    if args.out is not None:
        from diffusion_studio.core.files import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(report.markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
