"""The evaluation report as a text table or a Markdown comparison, and atomic JSON / PNG writing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from diffusion_studio.core.files import atomic_write_bytes
from diffusion_studio.errors import UsageError


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
    size = report["variety"]["size"]
    if size.get("small_share") is not None:
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[size.get("balanced")]
        lines.append(f"size omitted: small {_pct(size['small_share']).strip()} of {size['found']} "
                     f"(bar 30–70%): {verdict}")
    if "background_fidelity" in report:
        lines.append(_fidelity_line("single objects", report["background_fidelity"]))
    pairs = report.get("two_objects")
    if pairs:
        lines += ["", f"two objects ({pairs['n']} prompts, noun pairs held out of training): "
                  f"bound {_pct(pairs['bound_rate']).strip()} (bar ≥{100 * pairs['bar']:.0f}%: "
                  f"{'pass' if pairs['pass'] else 'FAIL'}), both present {_pct(pairs['both_rate']).strip()}, "
                  f"swapped {_pct(pairs['swapped_rate']).strip()}, colors {_pct(pairs['colors_rate']).strip()}, "
                  f"shapes {_pct(pairs['shapes_rate']).strip()}, background {_pct(pairs['background_rate']).strip()}; "
                  f"objects found per image {pairs['objects_found']}",
                  _fidelity_line("two objects", pairs["background_fidelity"])]
    return "\n".join(lines)


def _fidelity_line(scope: str, f: dict) -> str:
    if not f.get("n"):
        return f"background fidelity ({scope}): n/a"
    return (f"background fidelity ({scope}): {_pct(f['within_tolerance']).strip()} within {f['tolerance']:g} RGB "
            f"units of the named colour (bar ≥{100 * f['bar']:.0f}%: {'pass' if f['pass'] else 'FAIL'}); "
            f"error median {f['error_median']:.1f}, p95 {f['error_p95']:.1f}; "
            f"flat-area noise RMS median {f['noise_rms_median']:.2f}, p95 {f['noise_rms_p95']:.2f}")


def _mark(row: dict) -> str:
    if row.get("accuracy") is None:
        return "n/a"
    return f"{100 * row['accuracy']:.1f}% {'✓' if row['pass'] else '✗'}"


def markdown_table(reports: list[dict]) -> str:
    """One Markdown row per report (e.g. one per sampler) for a model card."""
    attrs = ("color", "shape", "size", "position", "background")
    head = (["sampler", "steps", "guidance", "prompts"] + list(attrs)
            + ["variety size / position / background", "small when size omitted", "background within 16",
               "two objects bound (both / swapped)", "s per image (alone)", "s per image (batched)"])
    bar_of = reports[0]["attributes"] if reports else {}
    bars = " · ".join(f"{a} ≥ {100 * bar_of[a]['bar']:.0f}%" for a in attrs) if reports else ""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in reports:
        s, t = r.get("settings", {}), r["timing"]
        variety = " / ".join(f"{v['normalized_entropy']:.2f}" if v["found"] else "n/a"
                             for v in (r["variety"][a] for a in ("size", "position", "background")))
        alone = t.get("seconds_per_image_batch1")
        small = r["variety"]["size"].get("small_share")
        fid = r.get("background_fidelity") or {}
        pairs = r.get("two_objects")
        cells = [str(s.get("sampler", "?")), str(s.get("steps", "?")), f"{s.get('guidance', float('nan')):g}",
                 str(r["n"])] + [_mark(r["attributes"][a]) for a in attrs] + [
            variety, "n/a" if small is None else f"{100 * small:.0f}%",
            "n/a" if fid.get("within_tolerance") is None else f"{100 * fid['within_tolerance']:.1f}%",
            "n/a" if not pairs else (f"{100 * pairs['bound_rate']:.1f}% ({100 * pairs['both_rate']:.0f}% / "
                                     f"{100 * pairs['swapped_rate']:.0f}%, n={pairs['n']})"),
            "n/a" if alone is None else f"{alone:.3f}",
            f"{t['seconds_per_image']:.3f} (batch {t['batch_size']})"]
        lines.append("| " + " | ".join(cells) + " |")
    if bars:
        lines += ["", f"Bar: {bars} (size, position, background scored when the prompt names them); "
                  "variety = normalised entropy of the value where the prompt omits it (1 = uniform)."]
    return "\n".join(lines)


def read_report(path: Path) -> dict:
    """A report written by `write_json` (UsageError with one sentence if it is not one)."""
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"Cannot read the report {path}: {exc.strerror or exc}.") from None
    except (ValueError, RecursionError):  # RecursionError: brackets nested too deep for the parser
        raise UsageError(f"{path} is not a JSON evaluation report.") from None
    if not isinstance(report, dict) or not {"attributes", "variety", "timing", "n"} <= set(report):
        raise UsageError(f"{path} is not an evaluation report written by 'diffusion-studio eval --json'.")
    check_report_fields(report, path)
    return report


_NUMBER, _OPTIONAL_NUMBER = (int, float), (int, float, type(None))
_MISSING = object()
# Every field `markdown_table` reads, with the JSON types it takes; `optional` ones may be missing.
_TABLE_FIELDS: tuple[tuple[str, tuple[type, ...], bool], ...] = (
    ("n", (int,), False),
    ("settings", (dict,), True),
    ("settings.sampler", (str,), True),
    ("settings.steps", (int,), True),
    ("settings.guidance", _NUMBER, True),
    ("timing", (dict,), False),
    ("timing.seconds_per_image", _NUMBER, False),
    ("timing.batch_size", (int,), False),
    ("timing.seconds_per_image_batch1", _OPTIONAL_NUMBER, True),
    ("variety.size.small_share", _OPTIONAL_NUMBER, True),
    ("background_fidelity", (dict,), True),
    ("background_fidelity.within_tolerance", _OPTIONAL_NUMBER, True),
    ("two_objects", (dict,), True),
    ("two_objects.n", (int,), True),
    ("two_objects.bound_rate", _OPTIONAL_NUMBER, True),
    ("two_objects.both_rate", _OPTIONAL_NUMBER, True),
    ("two_objects.swapped_rate", _OPTIONAL_NUMBER, True),
    *((f"attributes.{a}.{key}", kinds, False) for a in ("color", "shape", "size", "position", "background")
      for key, kinds in (("accuracy", _OPTIONAL_NUMBER), ("pass", (bool,)), ("bar", _NUMBER))),
    *((f"variety.{a}.{key}", kinds, False) for a in ("size", "position", "background")
      for key, kinds in (("found", (int,)), ("normalized_entropy", _NUMBER))),
)


def _json_kind(kind: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "text", dict: "an object",
            list: "a list", type(None): "null"}.get(kind, kind.__name__)


def check_report_fields(report: dict, path: Path | str) -> None:
    """UsageError with one sentence naming the first field `markdown_table` needs that is missing
    or has the wrong JSON type (true/false is not a number here)."""
    for dotted, kinds, optional in _TABLE_FIELDS:
        value: object = report
        keys = dotted.split(".")
        for depth, key in enumerate(keys):
            if not isinstance(value, dict):
                parent = ".".join(keys[:depth])
                raise UsageError(f"{path} is not a valid evaluation report: the field {parent!r} must be an object, "
                                 f"got {_json_kind(type(value))}.")
            value = value.get(key, _MISSING)
            if value is _MISSING:
                break
        if value is _MISSING:
            if optional:
                continue
            raise UsageError(f"{path} is not a complete evaluation report: the field {dotted!r} is missing.")
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            expected = " or ".join(_json_kind(k) for k in kinds if not (k is int and float in kinds))
            raise UsageError(f"{path} is not a valid evaluation report: the field {dotted!r} must be {expected}, "
                             f"got {_json_kind(type(value))}.")
