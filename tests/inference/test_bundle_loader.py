"""load_bundle: a good bundle loads on the CPU; every broken bundle fails with one sentence."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from diffusion_studio.core.bundle import parse_model_json, read_model_json
from diffusion_studio.core.schedule import make_schedule
from diffusion_studio.errors import BundleError, UsageError
from diffusion_studio.inference import bundle_loader, providers
from diffusion_studio.inference.bundle_loader import default_bundle_path, load_bundle
from diffusion_studio.paths import default_model_dir


def _edit_model_json(folder: Path, edit) -> None:
    data = json.loads((folder / "model.json").read_text())
    edit(data)
    (folder / "model.json").write_text(json.dumps(data))


def _rehash(folder: Path) -> None:
    """Make model.json's `files` agree with the bytes on disk (as a careless exporter would)."""

    def edit(data: dict) -> None:
        for name in data["files"]:
            raw = (folder / name).read_bytes()
            data["files"][name] = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}

    _edit_model_json(folder, edit)


def _helper_unet(path: Path, *, names=("x", "t", "context", "context_mask"), t_type=TensorProto.INT64,
                 batch="N") -> None:
    """A valid ONNX graph (eps = x) whose inputs can be wrong on purpose."""
    inputs = [
        helper.make_tensor_value_info(names[0], TensorProto.FLOAT, [batch, 3, 8, 8]),
        helper.make_tensor_value_info(names[1], t_type, [batch]),
        helper.make_tensor_value_info(names[2], TensorProto.FLOAT, [batch, 8, 384]),
        helper.make_tensor_value_info(names[3], TensorProto.FLOAT, [batch, 8]),
    ]
    output = helper.make_tensor_value_info("eps", TensorProto.FLOAT, [batch, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Identity", [names[0]], ["eps"])], "g", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def test_tiny_bundle_loads_on_cpu(tiny_bundle):
    bundle = load_bundle(tiny_bundle, device="cpu")
    digest = hashlib.sha256((tiny_bundle / "unet.onnx").read_bytes()).hexdigest()
    assert bundle.model_hash == digest[:10]
    assert bundle.name == "tiny" and bundle.folder == tiny_bundle.resolve()
    assert (bundle.image_size, bundle.channels, bundle.T, bundle.max_tokens) == (8, 3, 50, 8)
    assert (bundle.default_sampler, bundle.default_steps, bundle.default_guidance) == ("ddim", 4, 2.0)
    np.testing.assert_array_equal(bundle.schedule.alphas_cumprod, make_schedule("linear", 50).alphas_cumprod)
    assert bundle.provider_info.active == "CPUExecutionProvider"
    assert bundle.provider_info.fallback_reason is None
    assert bundle.text_encoder.max_tokens == 8 and bundle.text_encoder.embedding_dim == 384
    context, mask = bundle.text_encoder.encode(["a red circle"])
    assert context.shape == (1, 8, 384) and mask.shape == (1, 8)


@pytest.mark.skipif(providers.cuda_unusable_reason() is None, reason="a usable CUDA provider is present")
def test_cuda_request_loads_on_cpu_with_reason(tiny_bundle):
    with pytest.warns(RuntimeWarning, match="CUDA was requested"):
        bundle = load_bundle(tiny_bundle, device="cuda")
    info = bundle.provider_info
    assert info.active == "CPUExecutionProvider" and info.requested == "cuda"
    assert info.fallback_reason


def test_default_bundle_path_is_the_bundled_model():
    assert default_bundle_path() == default_model_dir()


def _break_unet_bytes_truncated(folder: Path) -> None:
    raw = (folder / "unet.onnx").read_bytes()
    (folder / "unet.onnx").write_bytes(raw[: len(raw) // 2])


def _break_unet_bytes_corrupt_rehashed(folder: Path) -> None:
    raw = bytearray((folder / "unet.onnx").read_bytes())
    raw[:64] = b"\xff" * 64
    (folder / "unet.onnx").write_bytes(bytes(raw))
    _rehash(folder)


def _break_unet_truncated_rehashed(folder: Path) -> None:
    _break_unet_bytes_truncated(folder)
    _rehash(folder)


def _graph(**kwargs):
    def breaker(folder: Path) -> None:
        _helper_unet(folder / "unet.onnx", **kwargs)
        _rehash(folder)

    return breaker


def _field(edit):
    return lambda folder: _edit_model_json(folder, edit)


BROKEN = {
    "no model.json": (lambda f: (f / "model.json").unlink(), "is not a model bundle: it has no model.json"),
    "model.json not JSON": (lambda f: (f / "model.json").write_text("{nope"), "is not valid JSON"),
    "missing field": (_field(lambda d: d["diffusion"].pop("T")), "field 'diffusion.T' is missing"),
    "wrong field": (_field(lambda d: d["image"].update(size="big")), "field 'image.size' must be an integer"),
    "wrong prediction": (_field(lambda d: d["diffusion"].update(prediction="v")), "field 'diffusion.prediction'"),
    "missing unet": (lambda f: (f / "unet.onnx").unlink(), "lacks its U-Net file unet.onnx"),
    "unet not hashed": (_field(lambda d: d["files"].clear()), "lists no sha256 for unet.onnx"),
    "truncated unet": (_break_unet_bytes_truncated, "is truncated or was replaced"),
    "altered unet": (_field(lambda d: d["files"]["unet.onnx"].update(sha256="0" * 64)),
                     "does not match its sha256 in model.json"),
    "corrupt onnx": (_break_unet_bytes_corrupt_rehashed, "is not a valid ONNX model"),
    "truncated onnx": (_break_unet_truncated_rehashed, "is not a valid ONNX model"),
    "image size": (_field(lambda d: d["image"].update(size=16)),
                   "x has shape [N, 3, 8, 8], but model.json needs [N, 3, 16, 16]"),
    "channels": (_field(lambda d: d["image"].update(channels=1)),
                 "x has shape [N, 3, 8, 8], but model.json needs [N, 1, 8, 8]"),
    "max tokens": (_field(lambda d: d["conditioning"].update(max_tokens=16)),
                   "context has shape [N, 8, 384], but model.json needs [N, 16, 384]"),
    "embedding dim": (_field(lambda d: d["conditioning"].update(embedding_dim=128)),
                      "gives 384-dim embeddings, but model.json says 128"),
    "input names": (_graph(names=("x", "timestep", "context", "context_mask")),
                    "but a U-Net must take exactly x, t, context, context_mask"),
    "t dtype": (_graph(t_type=TensorProto.FLOAT), "t has type tensor(float), but model.json needs tensor(int64)"),
    "fixed batch": (_graph(batch=1), "the batch axis of x is fixed to 1, but it must be dynamic"),
    "encoder sha": (_field(lambda d: d["conditioning"].update(text_encoder_sha256="a" * 64)),
                    "is not the one this model was trained with (sha256 mismatch)"),
    "tokenizer sha": (_field(lambda d: d["conditioning"].update(tokenizer_sha256="b" * 64)),
                      "tokenizer.json is not the one this model was trained with"),
    "fp16 file missing": (_field(lambda d: d["unet"].update(fp16_file="unet.fp16.onnx")),
                          "lacks its fp16 U-Net file unet.fp16.onnx"),
    "bundle encoder missing": (_field(lambda d: d["conditioning"].update(text_encoder="text_encoder.onnx")),
                               "The model needs the bundle's text encoder"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_bundle_fails_with_one_sentence(bundle_copy, case):
    breaker, expected = BROKEN[case]
    folder = bundle_copy()
    breaker(folder)
    with pytest.raises(BundleError) as info:
        load_bundle(folder, device="cpu")
    message = str(info.value)
    assert expected in message
    assert "\n" not in message and message.endswith(".")


def test_missing_and_non_folder_bundles(tmp_path):
    with pytest.raises(BundleError, match=r"^The model bundle .*nowhere does not exist\.$"):
        load_bundle(tmp_path / "nowhere")
    (tmp_path / "file.onnx").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"is not a folder"):
        load_bundle(tmp_path / "file.onnx")


def test_missing_default_model_says_how_to_fix_it(tmp_path, monkeypatch):
    import diffusion_studio.paths

    default = tmp_path / "models" / "shapes"
    monkeypatch.setattr(diffusion_studio.paths, "default_model_dir", lambda: default)
    expected = (f"The default model is not installed at {default}; "
                "pass --model BUNDLE (or reinstall Diffusion Studio).")
    with pytest.raises(BundleError) as info:
        load_bundle(None, device="cpu")  # no path: the default
    assert str(info.value) == expected
    with pytest.raises(BundleError) as info:
        load_bundle(default, device="cpu")  # the same folder named explicitly
    assert str(info.value) == expected
    default.mkdir(parents=True)  # present but empty (a broken install): still not installed
    with pytest.raises(BundleError) as info:
        load_bundle(None, device="cpu")
    assert str(info.value) == expected
    with pytest.raises(BundleError) as info:  # any other missing folder keeps its own sentence
        load_bundle(tmp_path / "other", device="cpu")
    assert str(info.value) == f"The model bundle {tmp_path / 'other'} does not exist."


def test_missing_shared_text_encoder(bundle_copy, tmp_path, monkeypatch):
    empty = tmp_path / "no_encoder"
    empty.mkdir()
    monkeypatch.setattr(bundle_loader, "text_encoder_dir", lambda: empty)
    with pytest.raises(BundleError, match=r"needs the shared text encoder in .*text_encoder.onnx is missing\."):
        load_bundle(bundle_copy(), device="cpu")


def test_bundle_local_text_encoder_is_used(bundle_copy):
    from diffusion_studio.paths import text_encoder_dir

    folder = bundle_copy()
    for name in ("text_encoder.onnx", "tokenizer.json"):
        shutil.copy(text_encoder_dir() / name, folder / name)
    _edit_model_json(folder, lambda d: d["conditioning"].update(text_encoder="text_encoder.onnx"))
    bundle = load_bundle(folder, device="cpu")
    assert bundle.text_encoder.directory == folder


def test_unknown_device_is_rejected(tiny_bundle):
    with pytest.raises(UsageError, match="Unknown device 'tpu'"):
        load_bundle(tiny_bundle, device="tpu")


def test_fp16_graph_is_preferred_only_where_cuda_loads(tiny_bundle, monkeypatch):
    spec = read_model_json(tiny_bundle)
    data = spec.to_dict()
    data["unet"]["fp16_file"] = "unet.fp16.onnx"
    with_fp16 = parse_model_json(data)
    assert not bundle_loader.prefer_fp16(with_fp16, "cpu")
    assert bundle_loader.prefer_fp16(with_fp16, "auto") == (providers.cuda_unusable_reason() is None)
    monkeypatch.setattr(bundle_loader, "cuda_unusable_reason", lambda: None)  # as on a machine with a GPU
    assert bundle_loader.prefer_fp16(with_fp16, "auto") and bundle_loader.prefer_fp16(with_fp16, "cuda")
    assert not bundle_loader.prefer_fp16(with_fp16, "cpu")
    assert not bundle_loader.prefer_fp16(spec, "cuda")  # no fp16 file declared


# --- confinement by resolved path and hostile JSON (issue 9) ----------------------------------


def _spy_reads(monkeypatch) -> list[str]:
    """Record every path that sha256_file hashes or ONNX Runtime opens during load_bundle."""
    seen: list[str] = []
    real_hash, real_create = bundle_loader.sha256_file, bundle_loader.create_session
    monkeypatch.setattr(bundle_loader, "sha256_file", lambda p: seen.append(str(p)) or real_hash(p))
    monkeypatch.setattr(bundle_loader, "create_session",
                        lambda p, *a, **k: seen.append(str(p)) or real_create(p, *a, **k))
    return seen


def test_unet_symlinked_outside_the_bundle_is_refused_before_reading(bundle_copy, tmp_path, monkeypatch):
    folder = bundle_copy()
    outside = tmp_path / "outside.onnx"
    (folder / "unet.onnx").rename(outside)  # the very same bytes: the hash in model.json still matches
    (folder / "unet.onnx").symlink_to(outside)
    seen = _spy_reads(monkeypatch)
    with pytest.raises(BundleError) as info:
        load_bundle(folder, device="cpu")
    assert str(info.value) == (f"the U-Net file 'unet.onnx' in {str(folder)!r} leads outside the folder "
                               f"(to {str(outside.resolve())!r}); refusing to read it.")
    assert seen == []


def test_unet_symlinked_to_etc_passwd_is_not_hashed(bundle_copy, monkeypatch):
    folder = bundle_copy()
    (folder / "unet.onnx").unlink()
    (folder / "unet.onnx").symlink_to("/etc/passwd")
    seen = _spy_reads(monkeypatch)
    with pytest.raises(BundleError) as info:
        load_bundle(folder, device="cpu")
    assert str(info.value) == (f"the U-Net file 'unet.onnx' in {str(folder)!r} leads outside the folder "
                               "(to '/etc/passwd'); refusing to read it.")
    assert seen == []


def test_fp16_unet_symlinked_outside_is_refused(bundle_copy, tmp_path):
    folder = bundle_copy()
    (tmp_path / "other.onnx").write_bytes((folder / "unet.onnx").read_bytes())
    (folder / "unet.fp16.onnx").symlink_to(tmp_path / "other.onnx")
    _edit_model_json(folder, lambda d: d["unet"].update(fp16_file="unet.fp16.onnx"))
    _rehash_with(folder, "unet.fp16.onnx")
    with pytest.raises(BundleError, match=r"^the fp16 U-Net file 'unet\.fp16\.onnx' in .* leads outside the folder"):
        load_bundle(folder, device="cpu")


def _rehash_with(folder: Path, name: str) -> None:
    raw = (folder / name).read_bytes()
    _edit_model_json(folder, lambda d: d["files"].update({name: {"sha256": hashlib.sha256(raw).hexdigest(),
                                                                  "bytes": len(raw)}}))


def test_model_json_symlinked_outside_is_refused(bundle_copy, tmp_path):
    folder = bundle_copy()
    outside = tmp_path / "model.json"
    (folder / "model.json").rename(outside)
    (folder / "model.json").symlink_to(outside)
    with pytest.raises(BundleError) as info:
        load_bundle(folder, device="cpu")
    assert str(info.value) == (f"the bundle's model.json in {str(folder)!r} leads outside the folder "
                               f"(to {str(outside.resolve())!r}); refusing to read it.")


def test_symlinks_inside_the_bundle_are_allowed(bundle_copy):
    folder = bundle_copy()
    (folder / "weights").mkdir()
    (folder / "unet.onnx").rename(folder / "weights" / "unet-v1.onnx")
    (folder / "unet.onnx").symlink_to(Path("weights") / "unet-v1.onnx")
    (folder / "model.json").rename(folder / "model.v1.json")
    (folder / "model.json").symlink_to("model.v1.json")
    bundle = load_bundle(folder, device="cpu")
    assert bundle.name == "tiny"
    assert bundle.model_hash == hashlib.sha256((folder / "weights" / "unet-v1.onnx").read_bytes()).hexdigest()[:10]


def test_bundle_reached_through_a_symlinked_folder_loads(bundle_copy, tmp_path):
    folder = bundle_copy()
    link = tmp_path / "link-to-bundle"
    link.symlink_to(folder)
    assert load_bundle(link, device="cpu").folder == folder.resolve()


@pytest.mark.parametrize("field, value", [
    ("file", "../unet.onnx"), ("file", "/etc/passwd"), ("fp16_file", "../../etc/passwd"),
])
def test_dotdot_and_absolute_unet_names_are_refused(bundle_copy, field, value):
    folder = bundle_copy()
    _edit_model_json(folder, lambda d: d["unet"].update({field: value}))
    with pytest.raises(BundleError) as info:
        load_bundle(folder, device="cpu")
    assert str(info.value) == (f"{folder / 'model.json'}: field 'unet.{field}' must be a file name inside "
                               f"the bundle folder, got {value!r}.")


def test_dotdot_text_encoder_name_is_refused(bundle_copy):
    folder = bundle_copy()
    _edit_model_json(folder, lambda d: d["conditioning"].update(text_encoder="../text_encoder.onnx"))
    with pytest.raises(BundleError) as info:
        load_bundle(folder, device="cpu")
    assert str(info.value) == (f"{folder / 'model.json'}: field 'conditioning.text_encoder' must be 'shared' or a "
                               "file name inside the bundle folder, got '../text_encoder.onnx'.")


def _local_encoder(folder: Path) -> None:
    from diffusion_studio.paths import text_encoder_dir

    for name in ("text_encoder.onnx", "tokenizer.json", "encoder.json"):
        shutil.copy(text_encoder_dir() / name, folder / name)
    _edit_model_json(folder, lambda d: d["conditioning"].update(text_encoder="text_encoder.onnx"))


@pytest.mark.parametrize("name", ["text_encoder.onnx", "tokenizer.json", "encoder.json"])
def test_bundle_text_encoder_files_symlinked_outside_are_refused(bundle_copy, tmp_path, name):
    folder = bundle_copy()
    _local_encoder(folder)
    outside = tmp_path / f"outside-{name}"
    (folder / name).rename(outside)
    (folder / name).symlink_to(outside)
    with pytest.raises(BundleError) as info:
        load_bundle(folder, device="cpu")
    assert str(info.value) == (f"the text encoder file {name!r} in {str(folder)!r} leads outside the folder "
                               f"(to {str(outside.resolve())!r}); refusing to read it.")


def test_bundle_text_encoder_with_invalid_encoder_json(bundle_copy):
    folder = bundle_copy()
    _local_encoder(folder)
    (folder / "encoder.json").write_text('{"model": "minilm",\n "embedding_dim": }')
    with pytest.raises(BundleError) as info:
        load_bundle(folder, device="cpu")
    assert str(info.value) == (f"the text encoder's encoder.json {str((folder / 'encoder.json').resolve())!r} "
                               "is not valid JSON: Expecting value at line 2, column 19.")


def test_bundle_text_encoder_with_encoder_json_not_an_object(bundle_copy):
    folder = bundle_copy()
    _local_encoder(folder)
    (folder / "encoder.json").write_text("[1, 2]")
    with pytest.raises(BundleError) as info:
        load_bundle(folder, device="cpu")
    assert str(info.value) == (f"the text encoder's encoder.json {str((folder / 'encoder.json').resolve())!r} "
                               "must hold a JSON object, got list.")


def test_hostile_model_json_deep_nesting(bundle_copy):
    folder = bundle_copy()
    (folder / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError) as info:
        load_bundle(folder, device="cpu")
    assert str(info.value) == (f"{str((folder / 'model.json').resolve())!r} nests arrays or objects too deeply "
                               "to be read (the limit is 64 levels).")


@pytest.mark.parametrize("T", [10**12, 10**100])
def test_hostile_model_json_huge_T(bundle_copy, T):
    folder = bundle_copy()
    _edit_model_json(folder, lambda d: d["diffusion"].update(T=T))
    with pytest.raises(BundleError) as info:
        load_bundle(folder, device="cpu")
    assert str(info.value).startswith(f"{folder / 'model.json'}: field 'diffusion.T' must be at most 100000 "
                                      "(the most steps a schedule can hold), got 1")


# --- format 2: class-conditional and unconditional graphs --------------------------------------


def _v2_graph(path: Path, *, kind: str, out_channels: int = 3, label_type=TensorProto.INT64,
              output: str = "model_output") -> None:
    """out = x + t/1000 (+ class_label), concatenated twice for 2C outputs: inputs x, t[, class_labels]."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8]),
              helper.make_tensor_value_info("t", TensorProto.INT64, ["N"])]
    nodes = [helper.make_node("Cast", ["t"], ["tf"], to=TensorProto.FLOAT),
             helper.make_node("Constant", [], ["k"], value=helper.make_tensor("k", TensorProto.FLOAT, [], [1e-3])),
             helper.make_node("Mul", ["tf", "k"], ["shift"])]
    if kind == "class":
        inputs.append(helper.make_tensor_value_info("class_labels", label_type, ["N"]))
        nodes += [helper.make_node("Cast", ["class_labels"], ["lf"], to=TensorProto.FLOAT),
                  helper.make_node("Add", ["shift", "lf"], ["shift2"])]
        shift = "shift2"
    else:
        shift = "shift"
    nodes += [helper.make_node("Constant", [], ["shape"],
                               value=helper.make_tensor("shape", TensorProto.INT64, [4], [-1, 1, 1, 1])),
              helper.make_node("Reshape", [shift, "shape"], ["s4"]),
              helper.make_node("Add", ["x", "s4"], ["y" if out_channels == 6 else output])]
    if out_channels == 6:
        nodes.append(helper.make_node("Concat", ["y", "y"], [output], axis=1))
    out = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", out_channels, 8, 8])
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, [out]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _v2_bundle(folder: Path, *, kind: str, variance: str = "fixed_large", **graph) -> Path:
    _v2_graph(folder / "unet.onnx", kind=kind, out_channels=6 if variance == "learned_range" else 3, **graph)

    def edit(d: dict) -> None:
        d["format_version"] = 2
        d["diffusion"].update(schedule="scaled_linear", beta_start=0.001, beta_end=0.02, prediction="v_prediction",
                              variance=variance)
        d["conditioning"] = {"kind": "class", "num_classes": 4, "class_names": ["a", "b", "c", "d"]} \
            if kind == "class" else {"kind": "none"}

    _edit_model_json(folder, edit)
    _rehash(folder)
    return folder


def test_unconditional_v2_bundle_loads_and_feeds_only_x_and_t(bundle_copy):
    bundle = load_bundle(_v2_bundle(bundle_copy(), kind="none"), device="cpu")
    assert (bundle.conditioning_kind, bundle.num_classes, bundle.class_names, bundle.text_encoder) == (
        "none", None, None, None)
    assert (bundle.prediction, bundle.variance) == ("v_prediction", "fixed_large")
    np.testing.assert_array_equal(bundle.schedule.betas, make_schedule("scaled_linear", 50, 0.001, 0.02).betas)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    out = bundle.denoiser(x, np.array([10, 40]), context=np.zeros((2, 8, 384), np.float32))  # extra input: unused
    np.testing.assert_allclose(out, x + np.array([0.01, 0.04], np.float32)[:, None, None, None], atol=1e-6)


def test_class_v2_bundle_feeds_class_labels_and_learned_range_has_2c_outputs(bundle_copy):
    bundle = load_bundle(_v2_bundle(bundle_copy(), kind="class", variance="learned_range"), device="cpu")
    assert (bundle.conditioning_kind, bundle.num_classes, bundle.class_names) == ("class", 4, ("a", "b", "c", "d"))
    assert bundle.variance == "learned_range"
    x = np.zeros((2, 3, 8, 8), np.float32)
    out = bundle.denoiser(x, np.array([1, 2]), class_labels=np.array([3, 0]))
    assert out.shape == (2, 6, 8, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 0, 0, 0], [3.001, 0.002], atol=1e-6)
    with pytest.raises(ValueError, match="needs the input 'class_labels'"):
        bundle.denoiser(x, np.array([1, 2]))


def test_text_denoiser_keywords_equal_the_positional_call(tiny_bundle):
    bundle = load_bundle(tiny_bundle, device="cpu")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    context, mask = bundle.text_encoder.encode(["a red circle", ""])
    t = np.array([3, 30])
    np.testing.assert_array_equal(bundle.denoiser(x, t, context, mask),
                                  bundle.denoiser(x, t, context=context, context_mask=mask))


V2_BROKEN = {
    "text graph for kind none": (dict(kind="none"), _graph(),
                                 "but a U-Net must take exactly x, t (conditioning kind 'none')"),
    "no labels for kind class": (dict(kind="class"), lambda f: _v2_graph(f / "unet.onnx", kind="none"),
                                 "but a U-Net must take exactly x, t, class_labels (conditioning kind 'class')"),
    "float labels": (dict(kind="class"), lambda f: _v2_graph(f / "unet.onnx", kind="class",
                                                             label_type=TensorProto.FLOAT),
                     "class_labels has type tensor(float), but model.json needs tensor(int64)"),
    "eps output name": (dict(kind="none"), lambda f: _v2_graph(f / "unet.onnx", kind="none", output="eps"),
                        "has outputs ['eps'], but a U-Net's first output must be 'model_output'"),
    "C outputs for learned_range": (dict(kind="none", variance="learned_range"),
                                    lambda f: _v2_graph(f / "unet.onnx", kind="none"),
                                    "model_output has shape [N, 3, 8, 8], but model.json needs [N, 6, 8, 8] "
                                    "(image size 8, 3 channels, 6 output channels, kind none)"),
}


@pytest.mark.parametrize("case", list(V2_BROKEN))
def test_v2_graph_that_disagrees_with_its_kind_is_one_sentence(bundle_copy, case):
    bundle_args, breaker, words = V2_BROKEN[case]
    folder = _v2_bundle(bundle_copy(), **bundle_args)
    breaker(folder)
    _rehash(folder)
    with pytest.raises(BundleError) as info:
        load_bundle(folder, device="cpu")
    assert words in str(info.value) and "\n" not in str(info.value)


def test_v2_graph_through_io_binding_reads_its_own_output_name(bundle_copy):
    from diffusion_studio.inference.session import OrtDenoiser

    folder = _v2_bundle(bundle_copy(), kind="class", variance="learned_range")
    bound = OrtDenoiser.from_file(folder / "unet.onnx", device="cpu", use_io_binding=True)
    x = np.ones((1, 3, 8, 8), np.float32)
    out = bound(x, np.array([5]), class_labels=np.array([2]))
    assert out.shape == (1, 6, 8, 8)
    np.testing.assert_allclose(out, np.full((1, 6, 8, 8), 3.005, np.float32), atol=1e-6)
