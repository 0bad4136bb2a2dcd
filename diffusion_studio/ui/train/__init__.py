"""The Train workspace: train a U-Net and export it, each in a child process (the GUI never imports torch).

Headless: `settings` (`TrainForm` and the command lines it runs), `run` (the trainer's events
folded into `TrainRun`, outcomes as one sentence), `processes` (a QProcess read line by line),
`state` (`TrainState`: the two processes and what they said, with signals). Views over the
state: `form_panel`, `view`, laid out by `workspace`.
"""
