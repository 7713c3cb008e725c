"""The canary-analysis benchmark behind ``rollwise simulate``.

Whole rollouts simulated request by request (in distribution), judged by Flagger- and
Kayenta-style baselines, Rollwise's own judge (``controller.analysis``) and an oracle
SPRT, on identical random streams. ``scenarios`` is the simulated world, ``judges`` the
contestants, ``run`` the harness and the report, ``cli`` the click command. Results go
to ``simulations/results/``.
"""
