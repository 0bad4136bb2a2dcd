"""Write a folder in the layout Hugging Face Optimum's ONNX export produces, from a diffusers SD folder.

Optimum is not installed here, so the graphs are exported with torch.onnx (TorchScript exporter)
under Optimum's input and output names:

- text_encoder/model.onnx: input_ids -> last_hidden_state, pooler_output
- unet/model.onnx: sample, timestep (diffusers' timestep, int64 [N] or float32 [N]), encoder_hidden_states -> out_sample
- vae_decoder/model.onnx: latent_sample -> sample
- vae_encoder/model.onnx: sample -> latent_parameters (the posterior's [mean, log σ²], as newer Optimum writes)

plus model_index.json, each part's config.json, tokenizer/ and scheduler/ copied from the source.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def write_optimum_folder(sd_folder: Path, out: Path, timestep_dtype: str = "int64") -> Path:
    import torch
    from diffusers import StableDiffusionPipeline

    pipe: Any = StableDiffusionPipeline.from_pretrained(str(sd_folder), safety_checker=None, feature_extractor=None,
                                                        requires_safety_checker=False)
    out.mkdir(parents=True)
    for part in ("tokenizer", "scheduler"):
        shutil.copytree(sd_folder / part, out / part)
    shutil.copy(sd_folder / "model_index.json", out / "model_index.json")
    for part in ("text_encoder", "unet", "vae_decoder", "vae_encoder"):
        (out / part).mkdir()
    shutil.copy(sd_folder / "text_encoder" / "config.json", out / "text_encoder" / "config.json")
    shutil.copy(sd_folder / "unet" / "config.json", out / "unet" / "config.json")
    for part in ("vae_decoder", "vae_encoder"):
        shutil.copy(sd_folder / "vae" / "config.json", out / part / "config.json")

    unet, vae, text = pipe.unet.eval(), pipe.vae.eval(), pipe.text_encoder.eval()

    class Wrapper(torch.nn.Module):
        def __init__(self, module: Any) -> None:
            super().__init__()
            self.m = module  # registered, so its weights export as initializers

    class Text(Wrapper):
        def forward(self, input_ids: Any) -> Any:
            o = self.m(input_ids, return_dict=True)
            return o.last_hidden_state, o.pooler_output

    class Unet(Wrapper):
        def forward(self, sample: Any, timestep: Any, encoder_hidden_states: Any) -> Any:
            return self.m(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    class Decoder(Wrapper):
        def forward(self, latent_sample: Any) -> Any:
            return self.m.decode(latent_sample, return_dict=False)[0]

    class Encoder(Wrapper):
        def forward(self, sample: Any) -> Any:
            return self.m.encode(sample, return_dict=False)[0].parameters

    c = unet.config.in_channels
    s = unet.config.sample_size
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    L, D = 77, text.config.hidden_size
    t_dtype = torch.int64 if timestep_dtype == "int64" else torch.float32
    jobs = [
        (Text(text), (torch.zeros(1, L, dtype=torch.int64),), ["input_ids"], ["last_hidden_state", "pooler_output"],
         {"input_ids": {0: "batch"}}, "text_encoder"),
        (Unet(unet), (torch.randn(2, c, s, s), torch.tensor([999, 999], dtype=t_dtype), torch.randn(2, L, D)),
         ["sample", "timestep", "encoder_hidden_states"], ["out_sample"],
         {"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"},
          "encoder_hidden_states": {0: "batch"}, "out_sample": {0: "batch", 2: "height", 3: "width"}}, "unet"),
        (Decoder(vae), (torch.randn(1, c, s, s),), ["latent_sample"], ["sample"],
         {"latent_sample": {0: "batch", 2: "h", 3: "w"}, "sample": {0: "batch", 2: "H", 3: "W"}}, "vae_decoder"),
        (Encoder(vae), (torch.randn(1, 3, s * f, s * f),), ["sample"], ["latent_parameters"],
         {"sample": {0: "batch", 2: "H", 3: "W"}, "latent_parameters": {0: "batch", 2: "h", 3: "w"}}, "vae_encoder"),
    ]
    for p in (*unet.parameters(), *vae.parameters(), *text.parameters()):
        p.requires_grad_(False)
    with torch.no_grad():
        for module, args, inputs, outputs, axes, part in jobs:
            torch.onnx.export(module, args, str(out / part / "model.onnx"), input_names=inputs, output_names=outputs,
                              dynamic_axes=axes, opset_version=17, dynamo=False)
    return out
