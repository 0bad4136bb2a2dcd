"""The evaluation report as a text table, and atomic JSON / PNG writing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from diffusion_studio.core.files import atomic_write_bytes


def write_json(report: dict, path: Path) -> None:
    atomic_write_bytes(path, (json.dumps(report, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def write_png(image: np.ndarray, path: Path, text: dict[str, str] | None = None) -> None:
    """uint8 [H, W, 3] -> PNG with optional tEXt chunks (e.g. the prompt)."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_itxt(key, value)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", pnginfo=info)
    atomic_write_bytes(path, buf.getvalue())


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}%"


def format_table(report: dict) -> str:
    """Accuracy per attribute with the quality bar as pass/fail, variety, and timing."""
    s = report.get("settings")
    lines = []
    if s:
        lines += [f"{report.get('model', '?')}: {s['sampler']}, {s['steps']} steps, guidance {s['guidance']:g}, "
                  f"{report['n']} prompts, seed {s['seed']}", ""]
    lines += [
        f"{'attribute':<11} {'scored':>6} {'correct':>7} {'accuracy':>8} {'bar':>6}  result",
    ]
    for attr, row in report["attributes"].items():
        scope = "" if row["always_named"] else "  (when named)"
        result = "pass" if row["pass"] else "FAIL"
        lines.append(f"{attr:<11} {row['scored']:>6} {row['correct']:>7} {_pct(row['accuracy']):>8} "
                     f"{'≥' + format(100 * row['bar'], '.0f') + '%':>6}  {result}{scope}")
    lines += ["", f"{'omitted':<11} {'images':>6} {'entropy':>7} {'top':>8} {'bar':>6}  result   values"]
    for attr, row in report["variety"].items():
        result = {True: "pass", False: "FAIL", None: "n/a "}[row["pass"]]
        values = ", ".join(f"{k} {v}" for k, v in sorted(row["counts"].items(), key=lambda kv: -kv[1]))
        lines.append(f"{attr:<11} {row['omitted']:>6} {row['normalized_entropy']:>7.2f} {_pct(row['top_share']):>8} "
                     f"{'≥' + format(row['bar'], '.2f'):>6}  {result}     {values}")
    t = report["timing"]
    single = t.get("seconds_per_image_batch1")
    lines += [
        "",
        f"shape found in {_pct(report['valid_share']).strip()} of the images; "
        f"{t['seconds_per_image']:.3f} s per image at batch {t['batch_size']} "
        f"({t['generate_seconds']:.1f} s generating, {t['analyze_seconds']:.2f} s analyzing)"
        + (f"; {single:.3f} s for one image alone" if single is not None else "")
        + (f" on {report['provider']}" if "provider" in report else ""),
        f"quality bar: {'PASS' if report['passed'] else 'FAIL'}; "
        f"variety: {'PASS' if report['variety_passed'] else 'FAIL'}",
    ]
    return "\n".join(lines)
