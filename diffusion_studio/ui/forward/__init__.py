"""The Forward process workspace: x_0 noised to x_t, with every DDPM coefficient of t on screen.

Headless: `state` (`ForwardState`: source, schedule, t, noise and the Markov chain, with
change signals). View: `workspace`.
"""
