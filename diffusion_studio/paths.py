"""Where shipped resources live (works installed, editable, and from a checkout)."""

from __future__ import annotations

from pathlib import Path


def resources_dir() -> Path:
    """The folder holding the default model bundle and the shared text encoder."""
    try:
        import diffusion_studio.resources as res

        return Path(res.__file__).resolve().parent
    except ImportError:  # running from a source checkout that was never installed
        return Path(__file__).resolve().parent.parent / "resources"


def text_encoder_dir() -> Path:
    """The shared MiniLM text encoder (text_encoder.onnx + tokenizer.json)."""
    return resources_dir() / "text_encoder"


def default_model_dir() -> Path:
    """The bundled default model (Shapes)."""
    return resources_dir() / "models" / "shapes"
