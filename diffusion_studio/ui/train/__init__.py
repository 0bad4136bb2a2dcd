"""The Train workspace: train a U-Net and export it, each in a child process (the GUI never imports torch).

Headless: `state` (the form, the command lines, the run folded from the trainer's JSON
events, outcomes), `processes` (a QProcess read line by line). Views: `form_panel`, `view`,
put together by `workspace`.
"""
