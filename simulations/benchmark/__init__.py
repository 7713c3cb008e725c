"""The canary-analysis benchmark behind ``rollwise simulate``.

Whole rollouts simulated request by request (in distribution), judged by Flagger- and
Kayenta-style baselines, Rollwise's own judge (``controller.analysis``) and oracle
SPRTs, on identical random streams. ``scenarios`` is the simulated world (revisions,
regressions, policies), ``conditions`` what production adds to it (overdispersion,
jitter, cold start, diurnal load, heavy tails) and the per-tick traffic, ``suites`` the
cases that ``--suite iid|realistic|all`` runs, ``judges`` the contestants, ``run`` the
harness and the summaries, ``report`` the files, ``cli`` the click command. Results go
to ``simulations/results/``. ``usersim`` is ``rollwise simulate --policy FILE``: the
same harness and judge on a user's own policy and traffic.
"""
