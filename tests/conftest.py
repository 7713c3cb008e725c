"""Shared pytest configuration: fixtures for the simulated world live in simulations/."""

pytest_plugins = ["simulations.kube.pytest_plugin"]
