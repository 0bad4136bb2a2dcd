"""The Generate workspace: prompt and settings in, reverse diffusion watched step by step, images out.

Headless: `state` (the form's `GenerationSettings` and `GenerateState`, the run's state with
change signals), `history` (the PNG folder), `previews` (step -> display frames),
`trajectory` (the recorded run and its export) and `worker` (the generation thread).
Views: `settings_panel`, `preview_area`, `history_panel`, put together by `workspace`.
"""
