"""``rollwise lineage NAMESPACE/NAME``: what serves an endpoint and where it came from.

I/O at the edges: reads MLMD (read-only) from the settings (``ROLLWISE_MLMD__*``) or the
``--sqlite`` file, prints a tree or JSON. The tree is built by ``render`` (pure) from the
``LineageView``: endpoint -> revisions -> models -> training runs -> evaluation metrics,
then every rollout with its outcome, step verdicts and approvers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from controller.lineage import LineageUnavailable, LineageView
from controller.lineage.gate import format_number
from controller.lineage.mlmd import MLMDLineageStore
from controller.settings import MLMDSettings, load_settings

Node = tuple[str, list["Node"]]


def split_ref(ref: str) -> tuple[str, str]:
    """``NAMESPACE/NAME`` -> (namespace, name); anything else is a usage error."""
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise click.BadParameter(f"expected NAMESPACE/NAME, got {ref!r}", param_hint="REF")
    return namespace, name


def _metrics(metrics: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {format_number(float(v))}" for k, v in metrics.items()) or "none"


def _model_node(model: Mapping[str, Any]) -> Node:
    children: list[Node] = []
    run = model.get("run")
    if run is None:
        origin = ("registered by Rollwise; no training run recorded"
                  if model.get("registered_by_rollwise") else "no training run recorded")
        children.append((origin, []))
    else:
        pipeline = f" of pipeline {run['pipeline']}" if run.get("pipeline") else ""
        children.append((f"trained by run {run['name']}{pipeline} (task {run['task'] or '?'}, "
                         f"execution {run['execution_id']})", [
                             (f"evaluation: {_metrics(run['metrics'])}"
                              + (f"  [{', '.join(run['metrics_from'])}]"
                                 if run.get("metrics_from") else ""), [])]))
    roles = [f"{r['id']} ({r['role']}, {r['outcome']})" for r in model.get("rollouts", ())]
    if roles:
        children.append((f"rollouts: {'; '.join(roles)}", []))
    return (f"model {model['uri']}  (artifact {model['artifact_id']})", children)


def _rollout_node(rollout: Mapping[str, Any]) -> Node:
    moves = f"{rollout.get('from_revision') or '?'} -> {rollout.get('to_revision') or '?'}"
    label = (f"rollout {rollout['id']}  {rollout.get('outcome')}  {moves}  "
             f"policy {rollout.get('policy')}  started {rollout.get('started_at')}")
    children: list[Node] = [(f"model {rollout.get('model_uri')}", [])]
    events: list[tuple[str, str]] = []
    for verdict in rollout.get("verdicts", ()):
        events.append((str(verdict.get("at", "")),
                       f"step {verdict.get('step')}: {verdict.get('outcome')}: "
                       f"{verdict.get('reason')}"))
    for approval in rollout.get("approvals", ()):
        events.append((str(approval.get("at", "")),
                       f"approved step {approval.get('step')} by {approval.get('by')} via "
                       f"{approval.get('via')} at {approval.get('at')}"))
    children += [(text, []) for _, text in sorted(events, key=lambda e: e[0])]
    if rollout.get("reason"):
        children.append((f"last decision: {rollout['reason']}", []))
    if rollout.get("endpoint"):
        children.append((f"deployed to {rollout['endpoint']}", []))
    return label, children


def _entries(value: object) -> list[Mapping[str, Any]]:
    """A list of records from the view's JSON-friendly data (anything else: none)."""
    if not isinstance(value, list | tuple):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def tree(view: LineageView) -> Node:
    """The view as a tree of labels (pure)."""
    extra = view.extra
    models = _entries(view.models)
    placed: set[int] = set()
    revisions: list[Node] = []
    for revision in _entries(extra.get("revisions")):
        served = [m for m in models if revision["revision"] in m.get("revisions", ())]
        placed.update(int(m["artifact_id"]) for m in served)
        how = (f"  deployed by rollout {revision['deployed_by']}" if revision.get("deployed_by")
               else "  (serving before Rollwise's first recorded rollout)")
        revisions.append((f"revision {revision['revision']}{how}",
                          [_model_node(m) for m in served]
                          or [(f"model {revision.get('model_uri')}", [])]))
    unplaced = [_model_node(m) for m in models if int(m["artifact_id"]) not in placed]
    children = revisions
    if unplaced:
        children = [*children, ("models never promoted", unplaced)]
    children = [*children, ("rollouts", [_rollout_node(r) for r in _entries(view.rollouts)])]
    url = f"  {extra['url']}" if extra.get("url") else ""
    return f"{view.endpoint}{url}", children


def render(node: Node) -> list[str]:
    """A tree as indented lines with box-drawing branches."""
    label, children = node
    lines = [label]

    def walk(items: Sequence[Node], prefix: str) -> None:
        for i, (text, kids) in enumerate(items):
            last = i == len(items) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{text}")
            walk(kids, prefix + ("    " if last else "│   "))

    walk(children, "")
    return lines


def as_json(view: LineageView) -> dict[str, Any]:
    return {"endpoint": view.endpoint, **view.extra, "models": list(view.models),
            "rollouts": list(view.rollouts)}


def _settings(sqlite_path: Path | None) -> MLMDSettings:
    if sqlite_path is not None:
        return MLMDSettings(backend="sqlite", sqlite_path=sqlite_path)
    try:
        return load_settings().mlmd
    except (ValueError, ValidationError) as err:
        raise click.ClickException(f"invalid settings: {err}") from err


@click.command(name="lineage")
@click.argument("ref", metavar="NAMESPACE/NAME")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--sqlite", "sqlite_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Read this MLMD SQLite file instead of the configured store "
                   "(ROLLWISE_MLMD__*).")
def lineage(ref: str, output: str, sqlite_path: Path | None) -> None:
    """Show an InferenceService's lineage: revisions, the models they serve, the training
    runs and evaluations behind them, and every rollout with its verdicts and approvers."""
    namespace, name = split_ref(ref)
    store = MLMDLineageStore(_settings(sqlite_path), read_only=True)
    try:
        view = store.view(namespace, name)
    except LineageUnavailable as err:
        raise click.ClickException(str(err)) from err
    finally:
        store.close()
    if not view.extra.get("recorded", True):
        raise click.ClickException(f"nothing recorded for {namespace}/{name} in MLMD at "
                                   f"{store.where}")
    if output == "json":
        click.echo(json.dumps(as_json(view), indent=2, sort_keys=False))
        return
    for line in render(tree(view)):
        click.echo(line)
