"""The result JSON as text: markdown tables for BENCHMARKS.md (`python -m benchmarks --markdown R.json`)
and the targets of issue 14, judged against the measured values."""

from __future__ import annotations

from typing import Any

# (JSON key, comparison, bound, what it means): the issue's targets on the 2-core CPU.
TARGETS = (
    ("e2e.speedup_vs_diffusers", ">=", 4.0, "one image at least 4× faster than diffusers"),
    ("training.speedup_vs_diffusers", ">=", 2.0, "training at least 2× diffusers' images/s"),
    ("startup.cli.seconds", "<=", 0.6, "`diffusion-studio generate` process ≤ 0.6 s"),
    ("startup.app.seconds", "<=", 1.5, "app start to first paint ≤ 1.5 s"),
)


def lookup(result: dict[str, Any], key: str) -> Any:
    value: Any = result
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def judge_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value and met: True / False / None (not measured)."""
    judged = []
    for key, op, bound, text in TARGETS:
        value = lookup(result, key)
        met = None if not isinstance(value, (int, float)) else (value >= bound if op == ">=" else value <= bound)
        if result.get("quick"):
            met = None  # a smoke run's numbers judge nothing
        judged.append({"key": key, "target": f"{op} {bound:g}", "value": value, "met": met, "what": text})
    return judged


QUICK_NOTE = " (--quick: a smoke run, not a measurement)"


def _rate(row: dict[str, Any], name: str) -> str:
    fraction = row.get(f"{name}_fraction_of_peak")
    return f"{_f(row.get(f'{name}_gflops'), '.1f')} ({_f(None if fraction is None else 100 * fraction, '.0f')}%)"


def _f(value: Any, fmt: str = ".2f", suffix: str = "") -> str:
    return "–" if not isinstance(value, (int, float)) else f"{value:{fmt}}{suffix}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(result: dict[str, Any]) -> str:
    m = result.get("machine", {})
    v = m.get("versions", {})
    lines = [
        f"Measured {result.get('started_at', '?')}{QUICK_NOTE if result.get('quick') else ''}"
        f" on {m.get('cpu', '?')}, {m.get('physical_cores', '?')} physical cores "
        f"({', '.join(m.get('cpu_flags', []))}), load average at start {m.get('load_average_at_start')}; "
        f"onnxruntime {v.get('onnxruntime') or v.get('onnxruntime-gpu')}, torch {v.get('torch')}, "
        f"diffusers {v.get('diffusers')}, numpy {v.get('numpy')}. Medians after warm-up; "
        f"torch threads {result.get('settings', {}).get('torch_threads')}.",
        "",
    ]
    peak = result.get("matmul_peak")
    net = result.get("network")
    if net:
        lines += ["### One network call: ONNX Runtime vs torch eager", "",
                  f"{net.get('parameters')} parameters, {_f((net.get('flops_per_image') or 0) / 1e9, '.3f')} GFLOP "
                  f"per image; float32 matmul peak of this machine in the same run: "
                  f"{_f(peak.get('gflops') if peak else None, '.1f')} GFLOP/s; "
                  f"torch weights: {net.get('torch_weights')}.",
                  ""]
        lines += _table(["batch", "ONNX Runtime", "torch eager", "torch / ORT", "ORT GFLOP/s (of peak)",
                         "torch GFLOP/s (of peak)"],
                        [[str(r["batch"]), _f(r["onnxruntime_ms"], ".1f", " ms"), _f(r["torch_eager_ms"], ".1f", " ms"),
                          _f(r["speedup_vs_torch_eager"], ".2f", "×"),
                          _rate(r, "onnxruntime"), _rate(r, "torch_eager")]
                         for r in net["rows"]])
        lines.append("")
    o = result.get("ort_options")
    if o:
        lines += ["### ONNX Runtime session options (CPU)", "",
                  f"One guided step (batch {o['batch']}) per variant; {o['physical_cores']} physical cores.", ""]
        lines += _table(["variant", "per call", "vs default", "session creation", "max abs Δ vs default",
                         "relative RMS Δ"],
                        [[r["variant"], _f(r["call_ms"], ".1f", " ms"), _f(r["speedup_vs_default"], ".2f", "×"),
                          _f(r["session_s"], ".3f", " s"), _f(r["max_abs_diff"], ".1e"),
                          _f(r.get("relative_rms_error"), ".1e")] for r in o["rows"]])
        lines.append("")
    e = result.get("e2e")
    if e:
        lines += ["### One image end to end", "",
                  f"DPM-Solver++(2M) {e['steps']} steps, guidance {e['guidance']:g}, batch {e['batch']}.", ""]
        rows = [["ours (ONNX Runtime, the app's Pipeline)", _f(e["ours_s"], ".3f", " s"), "1.00×"],
                ["our U-Net in torch eager, same loop", _f(e["torch_eager_s"], ".3f", " s"),
                 _f(e["speedup_vs_torch_eager"], ".2f", "×")],
                ["diffusers UNet2DConditionModel + DPMSolverMultistepScheduler "
                 f"({e.get('diffusers_parameters') or '–'} params)",
                 _f(e["diffusers_s"], ".3f", " s") if e["diffusers_s"] else f"not run: {e.get('diffusers_skipped')}",
                 _f(e["speedup_vs_diffusers"], ".2f", "×")]]
        lines += _table(["run", "seconds per image", "time / ours"], rows) + [""]
    t = result.get("training")
    if t:
        lines += ["### Training throughput", "",
                  f"Forward + ε-MSE + backward + AdamW at batch {t['batch']} on {t.get('device', 'cpu')}.", ""]
        lines += _table(["model", "parameters", "images/s"],
                        [["ours (training.unet, cpu preset)", str(t["ours_parameters"]),
                          _f(t["ours_images_per_s"], ".1f")],
                         ["diffusers UNet2DConditionModel", str(t.get("diffusers_parameters") or "–"),
                          _f(t.get("diffusers_images_per_s"), ".1f")]])
        lines += ["", f"Ours / diffusers: {_f(t.get('speedup_vs_diffusers'), '.2f', '×')}.", ""]
    s = result.get("startup")
    if s:
        lines += ["### Start-up", ""]
        lines += _table(["what", "seconds"],
                        [["`diffusion-studio generate` process, spawn to PNG "
                          f"(steps: {s.get('cli', {}).get('steps', '–')})",
                          _f(s.get("cli", {}).get("seconds"), ".2f", " s") if s.get("cli", {}).get("seconds")
                          else f"failed: {s.get('cli', {}).get('error')}"],
                         ["app, spawn to the main window's first paint",
                          _f(s.get("app", {}).get("seconds"), ".2f", " s") if s.get("app", {}).get("seconds")
                          else f"not measured: {s.get('app', {}).get('error', 'skipped')}"]])
        lines.append("")
    p = result.get("preview")
    if p:
        lines += ["### Live preview overhead", "",
                  f"One image, {p['steps']} steps: preview off {_f(p['preview_off_s'], '.3f', ' s')}, every step "
                  f"previewed (x_t | x̂₀ | ε̂ frame) {_f(p['preview_on_s'], '.3f', ' s')}: "
                  f"{_f(100 * (p.get('overhead_fraction') or 0), '.0f')}% overhead.", ""]
    targets = result.get("targets") or []
    if targets:
        lines += ["### Targets (issue 14)", ""]
        verdict = {True: "yes", False: "**missed**", None: "not judged" if result.get("quick") else "not measured"}
        lines += _table(["target", "measured", "met"],
                        [[t["what"], _f(t["value"], ".2f"), verdict[t["met"]]] for t in targets])
        lines.append("")
    g = result.get("gpu")
    if g is not None:
        lines += gpu_markdown(g)
    return "\n".join(lines)


def gpu_markdown(g: dict[str, Any]) -> list[str]:
    lines = ["### GPU", ""]
    if not g.get("available"):
        return lines + [f"Not measured: {g.get('reason')}.", ""]
    lines += [f"{g.get('device')}: {g.get('provider')}.", ""]
    cols = ["cpu_fp32_ms", "cuda_fp32_no_binding_ms", "cuda_fp32_io_binding_ms", "cuda_fp16_io_binding_ms",
            "cuda_fp32_cuda_graph_ms"]
    lines += _table(["batch", "CPU fp32", "CUDA fp32", "+ IO binding", "fp16 + IO binding", "fp32 CUDA graph",
                     "best images/s"],
                    [[str(r["batch"]), *[_f(r.get(c), ".2f", " ms") for c in cols],
                      _f(r.get("images_per_s_best"), ".0f")] for r in g["rows"]])
    e = g.get("e2e")
    if e:
        lines += ["", f"One image on CUDA, DPM-Solver++ {e['steps']} steps with guidance: "
                  f"{_f(e['ours_s'], '.3f', ' s')} ({e.get('provider')})."]
    t = g.get("training")
    if t:
        lines += [f"Training on torch CUDA at batch {t['batch']}: ours {_f(t['ours_images_per_s'], '.0f')} images/s, "
                  f"diffusers {_f(t.get('diffusers_images_per_s'), '.0f')}."]
    return lines + [""]
