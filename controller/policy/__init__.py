"""The rollout policy language: models (``model``), durations, and the YAML loader.

Pure apart from reading policy files. See ``model.RolloutPolicy`` for the language (and
the bounds on every value), ``yamldoc`` for how YAML text becomes data with positions,
and ``loader.load_files`` for how files become policies or located problems.
"""

from controller.policy.loader import LoadedPolicy, PolicyError, Problem, load_file, load_files
from controller.policy.model import RolloutPolicy, json_schema

__all__ = ["LoadedPolicy", "PolicyError", "Problem", "RolloutPolicy", "json_schema", "load_file",
           "load_files"]
