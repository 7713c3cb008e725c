"""The Kubeflow Pipelines hand-off, without Kubeflow: the component's logic on a fake
InferenceServices API (merge-patch semantics, resourceVersion fencing), and the component
compiled into a pipeline by the real kfp SDK (in its own environment, .venv-kfp)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from controller.kfp.component import handoff_component
from controller.kfp.handoff import (
    HandoffError,
    ModelInput,
    hand_over,
    main,
    model_from_executor_input,
)
from controller.kube.annotations import MODEL_ARTIFACT_ANNOTATION
from controller.kube.fakes import FakeObjects

ROOT = Path(__file__).resolve().parents[2]
KFP_URI = "minio://mlpipeline/v2/artifacts/iris-training/run-v2/train/8f1e/model"


def isvc(*, managed: bool = True, uri: str = "s3://models/iris/v1") -> dict[str, Any]:
    annotations = {"rollwise.io/policy": "conservative"} if managed else {}
    return {
        "metadata": {"namespace": "team-a", "name": "iris", "uid": "u1", "resourceVersion": "41",
                     "annotations": annotations},
        "spec": {"predictor": {"sklearn": {"storageUri": uri, "resources": {}}}},
    }


def executor_input(name: str = "42", uri: str = KFP_URI) -> str:
    """What the KFP v2 launcher substitutes for {{$}} (ExecutorInput as protojson)."""
    return json.dumps({
        "inputs": {
            "parameterValues": {"namespace": "team-a", "inference_service": "iris"},
            "artifacts": {"model": {"artifacts": [{
                "name": name, "uri": uri,
                "type": {"schemaTitle": "system.Model", "schemaVersion": "0.0.1"},
                "metadata": {"display_name": "model", "framework": "sklearn"}}]}},
        },
        "outputs": {"outputFile": "/tmp/kfp_outputs/output_metadata.json"},
    })


def test_the_model_is_handed_over_held_at_zero_in_one_fenced_update() -> None:
    isvcs = FakeObjects(isvc())
    model = model_from_executor_input(executor_input())
    assert model == ModelInput(uri=KFP_URI, artifact_id=42)
    result = hand_over(isvcs, "team-a", "iris", model)
    s3_uri = KFP_URI.replace("minio://", "s3://")
    assert result.changed and result.storage_uri == s3_uri and result.artifact_id == 42
    [(namespace, name, patch)] = isvcs.patches
    assert (namespace, name) == ("team-a", "iris")
    assert patch == {
        "metadata": {"resourceVersion": "41",
                     "annotations": {MODEL_ARTIFACT_ANNOTATION: "42"}},
        "spec": {"predictor": {"sklearn": {"storageUri": s3_uri},
                               "canaryTrafficPercent": 0}},
    }
    obj = isvcs.objects[("team-a", "iris")]
    assert obj["spec"]["predictor"] == {"sklearn": {"storageUri": s3_uri, "resources": {}},
                                        "canaryTrafficPercent": 0}
    assert obj["metadata"]["annotations"]["rollwise.io/policy"] == "conservative"


def test_a_retried_step_changes_nothing() -> None:
    isvcs = FakeObjects(isvc())
    model = model_from_executor_input(executor_input())
    hand_over(isvcs, "team-a", "iris", model)
    again = hand_over(isvcs, "team-a", "iris", model)
    assert not again.changed
    assert "already serves" in again.message
    assert len(isvcs.patches) == 1


def test_an_artifact_id_for_the_serving_model_is_only_annotated() -> None:
    isvcs = FakeObjects(isvc(uri="s3://models/iris/v2"))
    result = hand_over(isvcs, "team-a", "iris", ModelInput("s3://models/iris/v2", 7))
    assert result.changed
    assert isvcs.patches[0][2] == {"metadata": {
        "resourceVersion": "41", "annotations": {MODEL_ARTIFACT_ANNOTATION: "7"}}}


def test_a_concurrent_change_is_retried_on_the_new_version() -> None:
    isvcs = FakeObjects(isvc())
    isvcs.conflict_next = True
    result = hand_over(isvcs, "team-a", "iris", ModelInput("s3://models/iris/v2"))
    assert result.changed
    assert len(isvcs.patches) == 1
    assert MODEL_ARTIFACT_ANNOTATION not in isvcs.objects[("team-a", "iris")]["metadata"][
        "annotations"]


@pytest.mark.parametrize(("obj", "namespace", "name", "uri", "message"), [
    (isvc(managed=False), "team-a", "iris", "s3://m/v2",
     "team-a/iris is not managed by Rollwise (no rollwise.io/policy annotation)"),
    (isvc(), "team-a", "churn", "s3://m/v2", "team-a/churn: no such InferenceService"),
    ({**isvc(), "spec": {"predictor": {"canaryTrafficPercent": 0}}}, "team-a", "iris",
     "s3://m/v2", "team-a/iris: the predictor has no storageUri to replace"),
    (isvc(), "Team_A", "iris", "s3://m/v2", "invalid namespace 'Team_A'"),
    (isvc(), "team-a", "iris", "models/v2", "invalid model URI 'models/v2'"),
])
def test_refusals_name_the_value(obj: dict[str, Any], namespace: str, name: str, uri: str,
                                 message: str) -> None:
    isvcs = FakeObjects(obj)
    with pytest.raises(HandoffError, match=message.replace("(", r"\(").replace(")", r"\)")):
        hand_over(isvcs, namespace, name, ModelInput(uri))
    assert isvcs.patches == []


def test_executor_input_forms_and_mistakes() -> None:
    vertex = "projects/p/locations/l/metadataStores/default/artifacts/1234"
    assert model_from_executor_input(executor_input(vertex)).artifact_id == 1234
    assert model_from_executor_input(executor_input("")).artifact_id is None
    with pytest.raises(HandoffError, match=r"no input artifact 'weights' \(inputs: \['model'\]\)"):
        model_from_executor_input(executor_input(), "weights")
    with pytest.raises(HandoffError, match="executor input is not JSON"):
        model_from_executor_input("{{$}}")
    with pytest.raises(HandoffError, match="input artifact 'model' has no uri"):
        model_from_executor_input(executor_input(uri=""))


def test_the_entry_point_reports_errors_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["--executor-input", "not json", "--namespace", "team-a",
                   "--inference-service", "iris"])
    assert status == 1
    assert "rollwise handoff: executor input is not JSON" in capsys.readouterr().err


def test_the_component_needs_kfp_only_when_built() -> None:
    if importlib.util.find_spec("kfp") is None:
        with pytest.raises(ImportError, match="needs the kfp package"):
            handoff_component("ghcr.io/rollwise/rollwise:0.1.0")
    with pytest.raises(ValueError, match="image must name a container image, got ''"):
        handoff_component("")


def _kfp_python() -> str:
    """A Python with kfp: this one, KFP_PYTHON, or the checkout's .venv-kfp, which
    `make test` builds (kfp cannot share this environment: constraints-kfp.txt)."""
    if importlib.util.find_spec("kfp") is not None:
        return sys.executable
    python = os.environ.get("KFP_PYTHON") or str(ROOT / ".venv-kfp" / "bin" / "python")
    if not Path(python).is_file():
        pytest.fail(f"no Python with kfp at {python}: run `make kfp-env` (make test does) "
                    "or set KFP_PYTHON")
    return python


def test_the_component_compiles_into_a_pipeline(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from kfp import compiler, dsl
        from controller.kfp.component import handoff_component

        handoff = handoff_component("ghcr.io/rollwise/rollwise:0.1.0")

        @dsl.component(base_image="python:3.11")
        def train(model: dsl.Output[dsl.Model]):
            open(model.path, "w").write("weights")

        @dsl.pipeline(name="iris-training")
        def pipeline(namespace: str = "team-a", inference_service: str = "iris"):
            trained = train()
            handoff(model=trained.outputs["model"], namespace=namespace,
                    inference_service=inference_service).set_caching_options(False)

        compiler.Compiler().compile(pipeline, {str(tmp_path / "pipeline.yaml")!r})
    """)
    python = _kfp_python()
    (tmp_path / "build.py").write_text(script)   # kfp reads component sources from files
    subprocess.run([python, str(tmp_path / "build.py")], check=True, timeout=120)
    text = (tmp_path / "pipeline.yaml").read_text()
    assert "exec-rollwise-handoff" in text
    assert "- controller.kfp.handoff" in text
    assert "- '{{$}}'" in text
    assert "image: ghcr.io/rollwise/rollwise:0.1.0" in text
    assert "schemaTitle: system.Model" in text
