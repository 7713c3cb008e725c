"""The world around the controller: control plane, simulated KServe, model endpoints, benchmarks.

The controller never imports this package.
"""
