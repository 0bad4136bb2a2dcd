"""The Forward process workspace: x_0 noised to x_t, with every DDPM coefficient of t on screen.

Headless: `state` (`ForwardState`: source, schedule, t, noise and the Markov chain, with
change signals), `sources` (Shapes examples, image files, arrays as x_0), `coefficients`
(the numbers and formulas of one t). Views over the state: `controls`, laid out with the
pictures, the table and the plot by `workspace`.
"""
