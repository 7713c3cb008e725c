"""Kubeflow Pipelines integration: a pipeline's last step hands an approved model to Rollwise.

``handoff`` holds the logic (kubernetes client only: it runs in the Rollwise image and is
tested without Kubeflow); ``component`` builds the KFP component around it and imports
``kfp`` only when called, because ``kfp`` (an optional extra; 2.14 and later need
protobuf >= 6.31) cannot share an environment with ``ml-metadata`` (protobuf < 5).
See docs/kfp.md.
"""
