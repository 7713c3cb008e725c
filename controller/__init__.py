"""Rollwise: progressive delivery controller for KServe InferenceServices."""
