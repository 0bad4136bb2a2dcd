"""End-to-end: a trained run -> `python -m exporter` -> a bundle the app loads and runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper


def _torch_eps(state: dict, unet_config, x, t, context, mask) -> np.ndarray:
    import torch

    from diffusion_studio.training.unet import UNet

    net = UNet(unet_config)
    net.load_state_dict(state)
    with torch.no_grad():
        return net.eval()(*(torch.from_numpy(a) for a in (x, t, context, mask))).numpy()


def _onnx_eps(path: Path, x, t, context, mask) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["eps"], {"x": x, "t": t, "context": context, "context_mask": mask})[0]


def test_bundle_has_exactly_the_declared_files_and_no_leftovers(ema_export, tiny_config):
    T_TINY, TOKENS = tiny_config.T, tiny_config.max_tokens
    from diffusion_studio.core.bundle import read_model_json
    from diffusion_studio.core.files import sha256_file

    bundle, _ = ema_export
    assert sorted(p.name for p in bundle.iterdir()) == ["model.json", "unet.fp16.onnx", "unet.onnx",
                                                         "validation.json"]
    assert [p.name for p in bundle.parent.iterdir()] == [bundle.name]  # no temp sibling left behind
    spec = read_model_json(bundle)
    raw = json.loads((bundle / "model.json").read_text())
    for name, facts in raw["files"].items():
        assert facts == {"sha256": sha256_file(bundle / name), "bytes": (bundle / name).stat().st_size}
    assert set(raw["files"]) == {"unet.onnx", "unet.fp16.onnx", "validation.json"}
    assert spec.image_size == 8 and spec.channels == 3 and spec.T == T_TINY
    assert raw["diffusion"] == {"T": T_TINY, "schedule": "linear", "prediction": "epsilon"}
    assert raw["sampler_defaults"] == {"sampler": "dpmpp-2m", "steps": 20, "guidance": 2.0}
    assert raw["conditioning"]["text_encoder"] == "shared"
    assert raw["conditioning"]["max_tokens"] == TOKENS and raw["conditioning"]["embedding_dim"] == 384
    assert raw["unet"]["file"] == "unet.onnx" and raw["unet"]["opset"] == 18
    assert raw["name"] == "tiny-ema"


def test_provenance_records_the_run(ema_export, tiny_run, tiny_config):
    TRAIN_STEPS = tiny_config.steps
    from diffusion_studio.training.checkpoints import load_checkpoint
    from diffusion_studio.training.unet import UNet

    bundle, _ = ema_export
    prov = json.loads((bundle / "model.json").read_text())["provenance"]
    ckpt = load_checkpoint(tiny_run)
    # Relative to the bundle folder (no absolute path of the building machine), and they lead there.
    assert prov["run"] == f"../../{tiny_run.parent.name}/{tiny_run.name}"
    assert prov["checkpoint"] == f"{prov['run']}/checkpoints/step-{TRAIN_STEPS:08d}.safetensors"
    assert (bundle / prov["run"]).resolve() == tiny_run.resolve()
    assert (bundle / prov["checkpoint"]).resolve() == ckpt.path.resolve()
    assert prov["step"] == TRAIN_STEPS and prov["weights"] == "ema"
    assert prov["metrics"] == ckpt.metrics and prov["metrics"]["loss"] > 0
    assert prov["exporter"] == "torch.onnx dynamo" and prov["exporter_fallback_reason"] is None
    assert prov["validated"] is True
    assert {"torch", "onnx", "onnxruntime"} <= set(prov["versions"])
    parameters = sum(p.numel() for p in UNet(ckpt.unet_config).parameters())
    assert json.loads((bundle / "model.json").read_text())["unet"]["parameters"] == parameters


def test_no_absolute_path_of_the_building_machine(ema_export, raw_export, tiny_run):
    """Neither model.json nor the graphs' metadata name the run's (or the bundle's) absolute folder."""
    for bundle, _ in (ema_export, raw_export):
        for name in ("model.json", "unet.onnx"):
            data = (bundle / name).read_bytes()
            assert str(tiny_run.parent).encode() not in data, name
            assert str(bundle.parent).encode() not in data, name
        meta = {p.key: p.value for p in onnx.load(str(bundle / "unet.onnx")).metadata_props}
        assert meta["diffusion_studio.provenance.run"] == f"../../{tiny_run.parent.name}/{tiny_run.name}"


def test_vocabulary_of_a_shapes_run(ema_export, raw_export):
    from diffusion_studio.inference.bundle_loader import load_bundle
    from exporter.vocabulary import shapes_vocabulary

    expected = shapes_vocabulary(pairs=False)  # the tiny run trains on Shapes without two-object examples
    assert "red" in expected and "circle" in expected and "next" not in expected
    for bundle, _ in (ema_export, raw_export):
        raw = json.loads((bundle / "model.json").read_text())
        assert raw["vocabulary"] == expected
        assert load_bundle(bundle, device="cpu").vocabulary == tuple(expected)
        meta = {p.key: p.value for p in onnx.load(str(bundle / "unet.onnx")).metadata_props}
        assert json.loads(meta["diffusion_studio.vocabulary"]) == expected


def test_onnx_graph_io_and_metadata(ema_export, tiny_config):
    T_TINY, TOKENS, TRAIN_STEPS = tiny_config.T, tiny_config.max_tokens, tiny_config.steps
    bundle, _ = ema_export
    proto = onnx.load(str(bundle / "unet.onnx"))
    onnx.checker.check_model(proto, full_check=True)

    def io(values):
        return [(v.name, v.type.tensor_type.elem_type,
                 [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]

    F, I64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    assert io(proto.graph.input) == [("x", F, ["N", 3, 8, 8]), ("t", I64, ["N"]),
                                     ("context", F, ["N", TOKENS, 384]), ("context_mask", F, ["N", TOKENS])]
    assert io(proto.graph.output) == [("eps", F, ["N", 3, 8, 8])]
    meta = {p.key: p.value for p in proto.metadata_props}
    raw = json.loads((bundle / "model.json").read_text())
    assert meta["diffusion_studio.diffusion.T"] == str(T_TINY)
    assert meta["diffusion_studio.diffusion.schedule"] == "linear"
    assert meta["diffusion_studio.provenance.step"] == str(TRAIN_STEPS)
    assert meta["diffusion_studio.conditioning.text_encoder_sha256"] == raw["conditioning"]["text_encoder_sha256"]
    assert meta["diffusion_studio.precision"] == "fp32"
    embedded = json.loads(meta["diffusion_studio.model_json"])
    assert embedded == {k: v for k, v in raw.items() if k != "files"}


def test_parity_report_within_bound(ema_export):
    bundle, result = ema_export
    report = json.loads((bundle / "validation.json").read_text())
    assert report["passed"] is True and report["bound_max_abs"] == 1e-4
    assert "CPUExecutionProvider" in report["providers"]
    fp32 = [e for e in report["network"] if e["file"] == "unet.onnx" and e["provider"] == "CPUExecutionProvider"]
    assert len(fp32) == 1 and fp32[0]["gated"]
    cases = {(c["t"], c["batch"]) for c in fp32[0]["cases"]}
    assert cases == {(t, n) for t in (1, 25, 50, 75, 100) for n in (1, 4)}
    assert all(0 <= c["mean_abs"] <= c["max_abs"] <= 1e-4 for c in fp32[0]["cases"])
    runs = {(r["sampler"], r["steps"]) for r in report["sampling"]}
    assert runs == {("dpmpp-2m", 20), ("ddim", 50)}
    for run in report["sampling"]:
        assert run["guidance"] == 2.0 and run["max_abs"] < 1e-3 and run["max_abs_uint8"] <= 1
    # The same report is printed.
    assert "PASSED" in result.out and "dpmpp-2m" in result.out and "t=100" in result.out


def test_bundle_loads_and_runs_in_the_app(ema_export, tiny_run, fixed_inputs):
    from diffusion_studio.inference.bundle_loader import load_bundle
    from diffusion_studio.inference.pipeline import GenerationRequest, Pipeline
    from diffusion_studio.training.checkpoints import load_checkpoint

    bundle, _ = ema_export
    loaded = load_bundle(bundle, device="cpu")
    assert loaded.provider_info.active == "CPUExecutionProvider"
    ckpt = load_checkpoint(tiny_run)
    got = loaded.denoiser(*fixed_inputs)  # batch 3: the batch axis is dynamic
    want = _torch_eps(ckpt.ema, ckpt.unet_config, *fixed_inputs)
    assert got.shape == (3, 3, 8, 8)
    assert np.abs(got - want).max() <= 1e-4
    assert np.abs(want).mean() > 1e-3  # a non-trivial network output

    result = Pipeline(loaded).generate(GenerationRequest(prompt="a red circle", steps=3, seed=5))
    assert result.images.shape == (1, 8, 8, 3) and result.images.dtype == np.uint8


def test_generate_cli_uses_the_bundle(ema_export, tmp_path):
    from PIL import Image

    from diffusion_studio.cli import main

    bundle, _ = ema_export
    out = tmp_path / "image.png"
    assert main(["generate", "a blue square", "--model", str(bundle), "--steps", "3", "--seed", "1",
                 "--device", "cpu", "-o", str(out)]) == 0
    assert Image.open(out).size == (8, 8)


def test_ema_and_raw_weights_really_differ(ema_export, raw_export, tiny_run, fixed_inputs):
    from diffusion_studio.training.checkpoints import load_checkpoint

    ckpt = load_checkpoint(tiny_run)
    weight_gap = max(float((ckpt.ema[k] - ckpt.model[k]).abs().max()) for k in ckpt.model)
    assert weight_gap > 1e-3  # the checkpoint's EMA and raw weights differ ...
    ema_eps = _onnx_eps(ema_export[0] / "unet.onnx", *fixed_inputs)
    raw_eps = _onnx_eps(raw_export[0] / "unet.onnx", *fixed_inputs)
    assert np.abs(ema_eps - raw_eps).max() > 1e-3  # ... and so do the exported networks,
    # each one being the weights it claims to be.
    assert np.abs(raw_eps - _torch_eps(ckpt.model, ckpt.unet_config, *fixed_inputs)).max() <= 1e-4
    assert np.abs(ema_eps - _torch_eps(ckpt.ema, ckpt.unet_config, *fixed_inputs)).max() <= 1e-4
    raw = json.loads((raw_export[0] / "model.json").read_text())
    assert raw["provenance"]["weights"] == "raw" and raw["name"] == "tiny raw"
    run = f"../../{tiny_run.parent.name}/{tiny_run.name}"  # found from the checkpoint file
    assert raw["provenance"]["run"] == run
    assert raw["provenance"]["checkpoint"] == f"{run}/checkpoints/{ckpt.path.name}"


def test_no_validate_writes_no_report(raw_export):
    from diffusion_studio.inference.bundle_loader import load_bundle

    bundle, result = raw_export
    raw = json.loads((bundle / "model.json").read_text())
    assert not (bundle / "validation.json").exists()
    assert raw["provenance"]["validated"] is False and raw["unet"]["fp16_file"] is None
    assert sorted(raw["files"]) == ["unet.onnx"]
    assert "parity" not in result.out
    load_bundle(bundle, device="cpu")


def _cached_export(ema_bundle: Path, perturb: float = 0.0):
    """export_unet stand-in returning the run's real exported graph (optionally with one weight nudged)."""
    from exporter.unet_export import DYNAMO, ExportInfo

    proto = onnx.load(str(ema_bundle / "unet.onnx"))
    if perturb:
        init = next(i for i in proto.graph.initializer if i.name.endswith("conv_in.weight"))
        array = numpy_helper.to_array(init).copy()
        array.flat[0] += perturb
        init.CopyFrom(numpy_helper.from_array(array, init.name))

    def export_unet(model, spec, opset):
        return onnx.ModelProto.FromString(proto.SerializeToString()), ExportInfo(DYNAMO, opset, None)

    return export_unet


def test_failed_parity_exits_1_and_writes_nothing(ema_export, tiny_run, tmp_path, monkeypatch, run_cli):
    import exporter.export

    monkeypatch.setattr(exporter.export, "export_unet", _cached_export(ema_export[0], perturb=0.05))
    result = run_cli(tiny_run, "--out", tmp_path / "bad")
    assert result.rc == 1
    assert "parity check failed" in result.err and "CPUExecutionProvider" in result.err
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_only_after_success(ema_export, tiny_run, tmp_path, monkeypatch, run_cli):
    import exporter.export

    target = tmp_path / "bundle"
    shutil.copytree(ema_export[0], target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    # A failing export with --force leaves the old bundle exactly as it was ...
    monkeypatch.setattr(exporter.export, "export_unet", _cached_export(ema_export[0], perturb=0.05))
    assert run_cli(tiny_run, "--out", target, "--force").rc == 1
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    # ... a successful one replaces it as a whole.
    monkeypatch.setattr(exporter.export, "export_unet", _cached_export(ema_export[0]))
    result = run_cli(tiny_run, "--out", target, "--force", "--name", "replaced", "--steps", "7")
    assert result.rc == 0, result.err
    raw = json.loads((target / "model.json").read_text())
    assert raw["name"] == "replaced" and raw["sampler_defaults"]["steps"] == 7
    assert sorted(p.name for p in target.iterdir()) == ["model.json", "unet.onnx", "validation.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_torchscript_fallback_is_recorded(tiny_run, tmp_path, monkeypatch, run_cli):
    import exporter.unet_export

    def broken(*args, **kwargs):
        raise RuntimeError("simulated torch.export failure")

    monkeypatch.setattr(exporter.unet_export, "_export_dynamo", broken)
    result = run_cli(tiny_run, "--out", tmp_path / "ts", "--sampler", "ddim", "--guidance", "4.5")
    assert result.rc == 0, result.err
    raw = json.loads((tmp_path / "ts" / "model.json").read_text())
    assert raw["provenance"]["exporter"] == "torch.onnx torchscript"
    assert "simulated torch.export failure" in raw["provenance"]["exporter_fallback_reason"]
    assert raw["sampler_defaults"] == {"sampler": "ddim", "steps": 20, "guidance": 4.5}
    report = json.loads((tmp_path / "ts" / "validation.json").read_text())
    assert report["passed"] and report["network"][0]["max_abs"] <= 1e-4
    assert "TorchScript" in result.out


def test_text_encoder_subcommand_is_dispatched(capsys):
    from exporter.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["text-encoder", "--help"])
    assert exc.value.code == 0
    assert "--out" in capsys.readouterr().out
