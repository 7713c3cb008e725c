"""Rollouts as a pure state machine: ``state`` (durable state, observations, commands) and
``machine`` (the transition function). No I/O; the reconciler applies the results."""
