"""Shared test set-up: offscreen Qt, a temp HOME so QSettings and user data stay isolated."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


# --- tiny ONNX U-Net bundle (inference / cli tests) -------------------------------------------
# A real, exported ONNX U-Net stand-in: a 2-conv net that reads all four named inputs
# (x, t, context, context_mask), built with torch and exported at opset 17 with a dynamic batch.
import gc  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

TINY_SIZE, TINY_CHANNELS, TINY_TOKENS, TINY_DIM, TINY_T = 8, 3, 8, 384, 50


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiny_unet_module(seed: int = 0):
    """A tiny eps-network with the U-Net's signature (x, t, context, context_mask) -> eps."""
    import torch

    class TinyUNet(torch.nn.Module):
        def __init__(self, hidden: int = 8) -> None:
            super().__init__()
            self.conv_in = torch.nn.Conv2d(TINY_CHANNELS, hidden, 3, padding=1)
            self.time_proj = torch.nn.Linear(2, hidden)
            self.text_proj = torch.nn.Linear(TINY_DIM, hidden)
            self.conv_out = torch.nn.Conv2d(hidden, TINY_CHANNELS, 3, padding=1)

        def forward(self, x, t, context, context_mask):
            phase = t.to(torch.float32)[:, None] / TINY_T
            t_emb = self.time_proj(torch.cat([torch.sin(phase), torch.cos(phase)], dim=1))
            mask = context_mask[:, :, None]
            pooled = (context * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # masked mean of tokens
            h = self.conv_in(x) + t_emb[:, :, None, None] + self.text_proj(pooled)[:, :, None, None]
            return self.conv_out(torch.nn.functional.silu(h))

    torch.manual_seed(seed)
    return TinyUNet().eval()


def export_tiny_unet(module, path: Path, *, size: int = TINY_SIZE, tokens: int = TINY_TOKENS) -> None:
    """torch.onnx.export (TorchScript exporter, opset 17) with a dynamic batch axis N."""
    import io
    import warnings

    import torch

    names = ["x", "t", "context", "context_mask"]
    example = (
        torch.zeros(2, TINY_CHANNELS, size, size),
        torch.tensor([1, 2], dtype=torch.int64),
        torch.zeros(2, tokens, TINY_DIM),
        torch.ones(2, tokens),
    )
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, example, buffer, input_names=names, output_names=["eps"], opset_version=17,
            dynamo=False, dynamic_axes={name: {0: "N"} for name in [*names, "eps"]},
        )
    path.write_bytes(buffer.getvalue())


def write_model_json(folder: Path, **overrides) -> dict:
    """model.json for a bundle folder (hashes computed from the files present)."""
    from diffusion_studio.paths import text_encoder_dir

    enc = text_encoder_dir()
    spec = {
        "format": "diffusion-studio-bundle", "format_version": 1, "name": "tiny",
        "image": {"size": TINY_SIZE, "channels": TINY_CHANNELS},
        "diffusion": {"T": TINY_T, "schedule": "linear", "prediction": "epsilon"},
        "sampler_defaults": {"sampler": "ddim", "steps": 4, "guidance": 2.0},
        "unet": {"file": "unet.onnx", "fp16_file": None, "opset": 17, "parameters": 3547,
                 "flops_per_forward": 100000},
        "conditioning": {"text_encoder": "shared", "max_tokens": TINY_TOKENS, "embedding_dim": TINY_DIM,
                         "text_encoder_sha256": _sha256(enc / "text_encoder.onnx"),
                         "tokenizer_sha256": _sha256(enc / "tokenizer.json")},
        "provenance": {"run": "tests", "step": 0, "weights": "ema", "metrics": {}, "exporter": "tests"},
        "files": {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size}
                  for p in sorted(folder.glob("*.onnx"))},
    }
    for key, value in overrides.items():
        spec[key] = value
    (folder / "model.json").write_text(json.dumps(spec, indent=2))
    return spec


@pytest.fixture(scope="session")
def tiny_unet():
    """The torch module behind the tiny bundle (same weights as its unet.onnx)."""
    import torch

    torch.set_num_threads(1)
    return tiny_unet_module()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_unet) -> Path:
    """A complete tiny bundle folder: unet.onnx (8x8 RGB, L=8, T=50) + model.json, shared encoder."""
    folder = tmp_path_factory.mktemp("bundles") / "tiny"
    folder.mkdir()
    export_tiny_unet(tiny_unet, folder / "unet.onnx")
    write_model_json(folder)
    return folder


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    """A function that copies the tiny bundle into tmp_path (to break it on purpose)."""

    def copy(name: str = "tiny") -> Path:
        target = tmp_path / name
        shutil.copytree(tiny_bundle, target)
        return target

    return copy


def nan_unet_bytes(size: int = TINY_SIZE, tokens: int = TINY_TOKENS) -> bytes:
    """An ONNX graph with the U-Net's four inputs whose eps = x · inf · 0 is NaN everywhere."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    const = lambda name, v: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=numpy_helper.from_array(np.array(v, np.float32)))
    nodes = [const("inf", np.inf), const("zero", 0.0),
             helper.make_node("Mul", ["x", "inf"], ["big"]), helper.make_node("Mul", ["big", "zero"], ["eps"])]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", TINY_CHANNELS, size, size]),
        helper.make_tensor_value_info("t", TensorProto.INT64, ["N"]),
        helper.make_tensor_value_info("context", TensorProto.FLOAT, ["N", tokens, TINY_DIM]),
        helper.make_tensor_value_info("context_mask", TensorProto.FLOAT, ["N", tokens]),
    ]
    output = helper.make_tensor_value_info("eps", TensorProto.FLOAT, ["N", TINY_CHANNELS, size, size])
    graph = helper.make_graph(nodes, "nan_unet", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="session")
def nan_bundle(tmp_path_factory) -> Path:
    """A valid tiny bundle whose U-Net outputs NaN: generation must fail as a model error."""
    folder = tmp_path_factory.mktemp("bundles") / "nan"
    folder.mkdir()
    (folder / "unet.onnx").write_bytes(nan_unet_bytes())
    write_model_json(folder, name="nan")
    return folder


# --- tiny random diffusers models, imported with `python -m exporter diffusers` ---------------
# Saved with save_pretrained like any Hub folder, imported in-process (--no-validate: the
# exporter's own tests check the import parity); built on first use, once per session.
# name -> (pipeline, image size, channels, UNet kwargs, scheduler kwargs, class names)
DIFFUSERS_MODELS: dict[str, tuple] = {
    # unconditional RGB 32², DDPM's own schedule: ε-prediction, fixed_small, clip_sample
    "rgb": ("DDPMPipeline", 32, 3, {}, {"num_train_timesteps": 100}, None),
    # unconditional grey 16², DDIM scheduler, v-prediction, no clipping
    "gray": ("DDIMPipeline", 16, 1, {}, {"num_train_timesteps": 50, "prediction_type": "v_prediction",
                                         "clip_sample": False}, None),
    # class-conditional with class names, cosine, ε-prediction with a learned variance (2C outputs)
    "cls": ("DDPMPipeline", 16, 3, {"num_class_embeds": 4, "out_channels": 6},
            {"num_train_timesteps": 60, "beta_schedule": "squaredcos_cap_v2", "variance_type": "learned_range"},
            ("cat", "dog", "ship", "frog")),
    # unconditional grey 256² with very few channels and no mid-block attention (128² tokens would
    # make a 16384² attention matrix): the preview cost at a large size
    "big": ("DDPMPipeline", 256, 1, {"block_out_channels": (4, 8), "norm_num_groups": 2, "add_attention": False},
            {"num_train_timesteps": 40}, None),
}


def tiny_diffusers_unet(size: int, channels: int, seed: int = 0, **kwargs):
    """A tiny random diffusers UNet2DModel (two levels, no attention unless asked)."""
    import diffusers
    import torch

    torch.manual_seed(seed)
    args = dict(sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1,
                block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    args.update(kwargs)
    return diffusers.UNet2DModel(**args).eval()


class DiffusersModels:
    """Saved diffusers pipelines and their imported bundles, made on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: dict[str, tuple[Path, Path]] = {}

    def source(self, name: str) -> Path:
        return self._make(name)[0]

    def bundle(self, name: str) -> Path:
        return self._make(name)[1]

    def _make(self, name: str) -> tuple[Path, Path]:
        if name not in self._made:
            import contextlib
            import io

            import diffusers

            from diffusion_studio.core.bundle import read_model_json, write_model_json
            from exporter.cli import main

            pipeline, size, channels, unet_kw, sched_kw, names = DIFFUSERS_MODELS[name]
            unet = tiny_diffusers_unet(size, channels, **unet_kw)
            scheduler_class = diffusers.DDIMScheduler if pipeline == "DDIMPipeline" else diffusers.DDPMScheduler
            source = self.root / f"{name}-diffusers"
            getattr(diffusers, pipeline)(unet=unet, scheduler=scheduler_class(**sched_kw)).save_pretrained(source)
            bundle = self.root / name
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(["diffusers", str(source), "--out", str(bundle), "--no-validate"])
            assert rc == 0, err.getvalue()
            if names:  # the importer cannot know class names; a bundle's author writes them in model.json
                import dataclasses

                spec = read_model_json(bundle)
                write_model_json(bundle, dataclasses.replace(
                    spec, conditioning=dataclasses.replace(spec.conditioning, class_names=tuple(names))))
            self._made[name] = (source, bundle)
        return self._made[name]


@pytest.fixture(scope="session")
def diffusers_models(tmp_path_factory) -> DiffusersModels:
    pytest.importorskip("diffusers")
    import torch

    torch.set_num_threads(1)  # tiny nets: threads only contend (the exporter tests do the same)
    return DiffusersModels(tmp_path_factory.mktemp("diffusers-models"))


@pytest.fixture(autouse=True)
def _gc_on_the_gui_thread(request):
    """Qt tests run like the app: cyclic garbage is collected on the GUI thread only
    (ui/gui_gc.py), never on a worker thread in the middle of a paint."""
    if "qtbot" not in request.fixturenames:
        yield
        return
    from diffusion_studio.ui import gui_gc

    collector = gui_gc.install(request.getfixturevalue("qapp"))
    collector.start()
    yield
    collector.stop()  # the tests without Qt run with gc's usual automatic collection


@pytest.fixture(autouse=True)
def _qt_widgets_gone_before_the_next_test(request):
    """After a Qt test (pytest-qt has closed its widgets by then): hide any top-level window still
    shown and run the pending deleteLater()s, so no widget of this test gets a paint event or is
    destroyed inside the next test's event processing (pyqtgraph views painted after their test
    ended crashed a run once)."""
    yield
    if "qtbot" not in request.fixturenames:
        return
    from PySide6.QtCore import QCoreApplication, QEvent
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        return
    for widget in QApplication.topLevelWidgets():
        if widget.isVisible():
            widget.hide()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    app.processEvents()
    gc.collect()  # this test's cycles go now, on the GUI thread, with nothing painting
