"""Our latent bundle (`python -m exporter diffusers SD_FOLDER`) and the Optimum-layout folder of the same
tiny Stable Diffusion pipeline give the same images (issue 16); the bundle's preview map and FLOPs are used."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from diffusion_studio.errors import UsageError
from diffusion_studio.inference.latent import LatentModel, LatentPipeline, load_latent, open_model
from diffusion_studio.inference.pipeline import GenerationRequest

pytest.importorskip("diffusers")
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))
from latent_models import build_tiny_sd_pipeline  # noqa: E402
from latent_optimum import write_optimum_folder  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[LatentModel, LatentModel]:
    from exporter.cli import main as export

    tmp = tmp_path_factory.mktemp("latent-bundle")
    sd = build_tiny_sd_pipeline(tmp)
    assert export(["diffusers", str(sd), "--out", str(tmp / "bundle")]) == 0
    return open_model(tmp / "bundle", "cpu"), load_latent(write_optimum_folder(sd, tmp / "optimum"), "cpu")


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp-2m"])
def test_bundle_and_optimum_folder_give_the_same_image(models: tuple[LatentModel, LatentModel], sampler: str) -> None:
    bundle, optimum = models
    request = GenerationRequest(prompt="a blue house", negative_prompt="the sun", sampler=sampler, steps=8, seed=4,
                                batch=2)
    a = LatentPipeline(bundle).generate(request).images
    b = LatentPipeline(optimum).generate(request).images
    assert a.shape == (2, 16, 16, 3) and np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert not np.array_equal(a[0], a[1])  # seed 4 and seed 5


def test_bundle_facts_preview_map_and_estimate(models: tuple[LatentModel, LatentModel]) -> None:
    bundle, _ = models
    data = json.loads((bundle.folder / "model.json").read_text(encoding="utf-8"))
    assert (bundle.source, bundle.t_offset, bundle.steps_offset, bundle.factor) == ("bundle", 0, 1, 2)
    assert bundle.preview_matrix is not None and bundle.preview_bias is not None
    np.testing.assert_allclose(bundle.preview_matrix, data["latent"]["preview"]["matrix"], rtol=1e-6)
    assert bundle.flops_per_forward == data["unet"]["flops_per_forward"] > 0
    pipeline = LatentPipeline(bundle)
    one = pipeline.estimate_seconds(GenerationRequest(prompt="x", steps=4, guidance=1.0))
    assert pipeline.estimate_seconds(GenerationRequest(prompt="x", steps=8, guidance=3.0)) == pytest.approx(4 * one)
    assert pipeline.generate(GenerationRequest(prompt="x", steps=2, width=24, height=12)).images.shape == (1, 12, 24, 3)


def test_a_bundle_with_fixed_spatial_dims_makes_only_its_own_size(models: tuple[LatentModel, LatentModel]) -> None:
    """Bundles exported before the dynamic H, W (unet.onnx with fixed h, w) refuse other sizes in one sentence."""
    import dataclasses

    import onnx

    from diffusion_studio.inference.providers import create_session

    bundle, _ = models
    proto = onnx.load(str(bundle.folder / "unet.onnx"))
    for value in [proto.graph.input[0], proto.graph.output[0]]:
        for index in (2, 3):
            value.type.tensor_type.shape.dim[index].dim_value = 8
    fixed = LatentPipeline(dataclasses.replace(bundle, unet=create_session(proto.SerializeToString(), "cpu")[0]))
    with pytest.raises(UsageError, match=r"^The U-Net of .* was exported for 16-pixel images only, so the width "
                                         r"must be 16, got 24\.$"):
        fixed.generate(GenerationRequest(prompt="x", width=24))
    assert fixed.generate(GenerationRequest(prompt="x", steps=2)).images.shape == (1, 16, 16, 3)


def test_cancel_stops_before_the_next_step_and_batches_take_a_prompt_each(
        models: tuple[LatentModel, LatentModel]) -> None:
    from diffusion_studio.errors import Cancelled

    bundle, _ = models
    pipeline = LatentPipeline(bundle)
    steps = pipeline.iterate(GenerationRequest(prompt="a cat", steps=5, seed=1)).steps
    first = next(steps)
    assert first.index == 0
    pipeline.cancel()
    with pytest.raises(Cancelled):
        next(steps)
    both = pipeline.generate(GenerationRequest(prompt=("a cat", "a dog"), steps=4, seed=8, batch=2)).images
    alone = pipeline.generate(GenerationRequest(prompt="a dog", steps=4, seed=9)).images[0]
    assert np.abs(both[1].astype(int) - alone.astype(int)).max() <= 1  # image i: prompt i, seed + i


def test_a_unet_with_other_inputs_is_refused_in_one_sentence(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    from diffusion_studio.errors import BundleError
    from diffusion_studio.inference.latent import _unet_io
    from diffusion_studio.inference.providers import create_session

    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4, 8, 8])
              for n in ("sample", "timestep", "encoder_hidden_states", "text_embeds")]
    graph = helper.make_graph([helper.make_node("Identity", ["sample"], ["out_sample"])], "sdxl-like", inputs,
                              [helper.make_tensor_value_info("out_sample", TensorProto.FLOAT, ["N", 4, 8, 8])])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    session, _ = create_session(path, "cpu")
    with pytest.raises(BundleError, match=r"^The U-Net .* must take exactly sample, timestep, encoder_hidden_states "
                                          r"\(a Stable Diffusion 1\.x/2\.x U-Net\)\.$"):
        _unet_io(session, path, optimum=True)
