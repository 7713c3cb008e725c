"""The Kubeflow Pipelines component ``rollwise-handoff``, built on demand.

Imports ``kfp`` only inside ``handoff_component``: ``kfp`` is an optional extra that
cannot share an environment with ``ml-metadata`` (kfp 2.14 and later need
protobuf >= 6.31, ml-metadata 1.17 needs protobuf < 5). This module imports nothing else
from Rollwise, so a pipeline author's environment only needs ``kfp`` and Rollwise's
sources (``pip install --no-deps rollwise``). I/O: none until called.

It is a container component: the step runs ``python -m controller.kfp.handoff`` in the
Rollwise image (which has the kubernetes client), so nothing is pip-installed in the pod
and neither kfp nor ml-metadata is needed at run time. See docs/kfp.md.
"""

# No ``from __future__ import annotations``: kfp reads the component's annotations as
# objects (Input[Model], str) when it builds the component.

from typing import Any

HANDOFF_COMMAND = ["python", "-m", "controller.kfp.handoff"]


def handoff_component(image: str) -> Any:
    """The ``rollwise-handoff`` component, running in the Rollwise ``image`` (for example
    ``ghcr.io/rollwise/rollwise:0.1.0``). Inputs: ``model`` (a Model artifact), and the
    ``namespace`` and ``inference_service`` to hand it to."""
    if not image or any(c.isspace() for c in image):
        raise ValueError(f"image must name a container image, got {image!r}")
    try:
        from kfp import dsl  # type: ignore[import-not-found,unused-ignore]
    except ImportError as err:
        raise ImportError("the Rollwise KFP component needs the kfp package "
                          "(pip install 'kfp>=2.7') where pipelines are compiled; it "
                          "cannot be installed next to ml-metadata") from err

    def rollwise_handoff(model: dsl.Input[dsl.Model], namespace: str,
                         inference_service: str) -> dsl.ContainerSpec:
        """Hand the model to Rollwise: set the InferenceService's storageUri with the
        canary held at 0% and annotate the model's MLMD artifact id; Rollwise gates it
        on the pipeline's recorded evaluation and rolls it out progressively."""
        return dsl.ContainerSpec(
            image=image, command=HANDOFF_COMMAND,
            args=["--executor-input", dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER,
                  "--namespace", namespace, "--inference-service", inference_service])

    return dsl.container_component(rollwise_handoff)
