"""The Generate workspace: prompt and settings in, reverse diffusion watched step by step, images out.

Headless: `settings` (`GenerationSettings`, the form's values), `state` (`GenerateState`:
settings, model and run, with change signals), `worker` (the generation thread), `history`
(the PNG folder), `previews` (a step as display frames), `trajectory` (the recorded run and
its export). Views over the state: `settings_panel`, `preview_area`, `history_panel`, laid
out by `workspace`.
"""
