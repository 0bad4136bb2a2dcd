"""Scoring Shapes models from the pixels.

analyzer.py   analyze(image) / analyze_batch(images) -> Analysis (numpy only)
prompts.py    draw_prompts(n, seed): prompts from the Shapes grammar with the facts they name
scoring.py    score(prompts, analyses): accuracy per attribute, variety, the quality bar
generation.py PipelineGenerator: batches of prompts through inference.pipeline
evaluate.py   evaluate(generator, prompts), evaluate_bundle(path, ...): the report dict
report.py     format_table(report), write_json(report, path)
"""

from diffusion_studio.eval.analyzer import Analysis, analyze, analyze_batch

__all__ = ["Analysis", "analyze", "analyze_batch"]
