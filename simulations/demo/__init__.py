"""The demo: the simulated world, the real controller, two rollouts, live."""
