"""Diffusion Studio exporter: a PyTorch training run -> a validated ONNX model bundle.

    python -m exporter RUN_DIR_OR_CHECKPOINT --out BUNDLE [--weights ema|raw] [--opset N] [--fp16]
                       [--no-validate] [--force] [--name NAME] [--guidance W] [--steps N] [--sampler S]
    python -m exporter inspect BUNDLE [--json]
    python -m exporter text-encoder --out DIR

Modules: `source` (checkpoint -> UNet, input checks), `unet_export` (torch.onnx, graph
checks, metadata), `fp16` (mixed-precision graph), `parity` (validation.json),
`bundle_writer` (atomic bundle folder, model.json), `folder_swap` (kill-safe replace of a
folder: renameat2 exchange, recovery of interrupted swaps), `export` (the pipeline), `inspect`,
`cli`. Importing this package imports neither torch nor onnxruntime.
"""
