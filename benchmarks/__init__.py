"""Benchmarks: every table of BENCHMARKS.md from one command, `python -m benchmarks`.

Each comparison (ours vs a peer) is measured in the same run, medians after warm-up, and the
result JSON carries the machine it ran on (machine.py). Modules, one per table: network
(ONNX Runtime vs torch eager per network call), e2e (one image vs diffusers and vs our U-Net
in torch eager), training (images/s vs diffusers), startup (CLI process to PNG, app start to
first paint), preview (preview on vs off), gpu (the CUDA table; needs a lent GPU), report
(the JSON as markdown). diffusers is a benchmark/test extra: missing, its rows say so.
"""
