"""Writing a model bundle folder: atomically, never half-written, model.json last.

The bundle is built in a hidden sibling folder (`.NAME.tmp-<pid>-…`) and swapped onto
the target only when every file is complete (exporter.folder_swap: an atomic exchange on
Linux, so the target holds the old or the new bundle at every moment). An existing target is refused unless
`force=True`; then it is swapped out only after the new bundle is complete, and only
when it is itself a bundle (has a model.json) or empty, so `--force` can never delete a
training run or a home folder by mistake.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from diffusion_studio.core.bundle import (
    FORMAT,
    FORMAT_VERSION,
    MODEL_JSON,
    parse_model_json,
)
from diffusion_studio.core.files import atomic_write_text, sha256_file
from diffusion_studio.errors import UsageError
from exporter.folder_swap import discard, replace_folder, staging_folder, tidy_leftovers

VALIDATION_JSON = "validation.json"
UNET_FILE = "unet.onnx"
UNET_FP16_FILE = "unet.fp16.onnx"
# A bundle-local text encoder (model.json conditioning.text_encoder = "text_encoder.onnx"): the
# loader needs the graph and the tokenizer beside it; encoder.json (its provenance) comes along.
TEXT_ENCODER_FILE = "text_encoder.onnx"
TOKENIZER_FILE = "tokenizer.json"
TEXT_ENCODER_INFO = "encoder.json"


def file_facts(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """{name: {"sha256", "bytes"}} for the named files of a bundle folder."""
    return {name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
            for name in names}


def seal(folder: Path, names: list[str], spec: dict[str, Any]) -> None:
    """The staged bundle's model.json, with the size and sha256 of every file in `names`."""
    spec["files"] = file_facts(folder, names)
    write_json_atomic(folder / MODEL_JSON, spec)


def write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def check_target(target: Path, force: bool) -> None:
    """Raise UsageError when `target` may not be (re)written; creates nothing."""
    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            raise UsageError(f"The output {target} exists and is not a folder.")
        if not force:
            raise UsageError(f"The output folder {target} already exists; pass --force to replace it.")
        if not (target / MODEL_JSON).is_file() and any(target.iterdir()):
            raise UsageError(f"The output folder {target} is not a model bundle (no {MODEL_JSON}); "
                             "refusing to replace it.")
    parent = target.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"The output's parent {parent} is not a folder.")
    existing = next((p for p in [parent, *parent.parents] if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK):
        raise UsageError(f"The folder {existing} is not writable.")


def check_text_encoder_source(folder: Path) -> None:
    """UsageError unless `folder` holds a text encoder that can be copied into a bundle."""
    for name in (TEXT_ENCODER_FILE, TOKENIZER_FILE):
        if not (Path(folder) / name).is_file():
            raise UsageError(f"Cannot include the text encoder: {Path(folder) / name} is missing "
                             "(make it with 'python -m exporter text-encoder --out DIR').")


def copy_text_encoder(source: Path, bundle: Path) -> list[str]:
    """Copy the encoder graph, its tokenizer (and encoder.json when present) into a staged bundle.

    Returns the copied file names, for model.json `files`. The bundle folder is a temp folder
    until it is renamed, so plain copies are atomic from the app's point of view.
    """
    check_text_encoder_source(source)
    names = [TEXT_ENCODER_FILE, TOKENIZER_FILE]
    if (Path(source) / TEXT_ENCODER_INFO).is_file():
        names.append(TEXT_ENCODER_INFO)
    for name in names:
        shutil.copyfile(Path(source) / name, Path(bundle) / name)
    return names


@contextmanager
def staged_bundle(target: Path, force: bool) -> Iterator[Path]:
    """Yield an empty temp folder beside `target`; on success swap it onto `target`.

    Leftovers of killed exports beside `target` are cleaned first (a missing `target` is restored
    from `.NAME.old-<pid>`; see exporter.folder_swap). On any exception the temp folder is removed
    and `target` is untouched.
    """
    target = Path(target).absolute()
    tidy_leftovers(target)
    check_target(target, force)
    created = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_folder(target)
    done = False
    try:
        yield tmp
        tmp.chmod(0o755)
        _swap_into_place(tmp, target, force)
        done = True
    finally:
        discard(tmp)
        if not done:
            for folder in created:  # innermost first: leave no empty parent folders behind
                with contextlib.suppress(OSError):
                    folder.rmdir()


def _swap_into_place(tmp: Path, target: Path, force: bool) -> None:
    if target.exists() or target.is_symlink():
        check_target(target, force)  # the folder could have changed while we exported
    replace_folder(tmp, target)


def relative_path(path: str | os.PathLike[str], bundle: str | os.PathLike[str]) -> str:
    """`path` relative to the bundle folder, with "/" separators, for model.json's provenance.

    A bundle carries no absolute path of the machine that built it; where no relative path
    exists (another drive on Windows) only the last name is kept.
    """
    try:
        return Path(os.path.relpath(Path(path).absolute(), Path(bundle).absolute())).as_posix()
    except ValueError:
        return Path(path).name


def model_json(
    *,
    name: str,
    image_size: int,
    channels: int,
    T: int,
    schedule: str,
    sampler_defaults: Mapping[str, Any],
    unet: Mapping[str, Any],
    conditioning: Mapping[str, Any],
    provenance: Mapping[str, Any],
    files: Mapping[str, Any] | None = None,
    vocabulary: Sequence[str] | None = None,
    diffusion: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The model.json document (docs/design.md), checked by core.bundle.

    format_version 1 (a text-conditioned ε-prediction U-Net, as training exports), or 2 when
    `diffusion` gives format-2 fields (β ends, prediction, variance, clipping) or the conditioning
    has a `kind`; `diffusion`'s T and schedule are replaced by the arguments.
    """
    v2 = diffusion is not None or "kind" in conditioning
    spec = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if v2 else 1,
        "name": name,
        "image": {"size": int(image_size), "channels": int(channels)},
        "diffusion": {"T": int(T), "schedule": str(schedule),
                      **{k: v for k, v in (diffusion or {"prediction": "epsilon"}).items()
                         if k not in ("T", "schedule")}},
        "sampler_defaults": dict(sampler_defaults),
        "unet": dict(unet),
        "conditioning": dict(conditioning),
        "provenance": dict(provenance),
        **({} if vocabulary is None else {"vocabulary": list(vocabulary)}),
        "files": dict(files or {}),
    }
    parse_model_json(spec)  # the app's own schema check: a BundleError here is an exporter bug
    return spec


def metadata_props(spec: Mapping[str, Any], prefix: str = "diffusion_studio.") -> dict[str, str]:
    """model.json facts (minus file hashes) flattened to ONNX metadata_props strings.

    Nested keys are dotted (`diffusion_studio.diffusion.T` = "1000"); lists and dicts that
    are leaves are JSON. The whole document also goes in `diffusion_studio.model_json`.
    """
    facts = {k: v for k, v in spec.items() if k != "files"}
    props: dict[str, str] = {f"{prefix}model_json": json.dumps(facts, sort_keys=True)}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, Mapping) and node:
            for sub, value in node.items():
                walk(value, f"{key}.{sub}" if key else str(sub))
        elif isinstance(node, str):
            props[prefix + key] = node
        else:
            props[prefix + key] = json.dumps(node)

    walk(facts, "")
    return props
