"""``rollwise status|promote|abort|retry|approve|pause|resume|deploy``: the SRE's handles.

Every action is a command added to the InferenceService's ``rollwise.io/commands``
annotation saying what, who (as the API server knows them) and when. It works from any
workstation with kubectl access, Kubernetes RBAC decides who may do it, the controller
acts on it within one interval, and it leaves an audit trail (Events).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import yaml
from kubernetes import config

from controller.cli import terminal
from controller.cli.table import Column, layout, plain
from controller.errors import Conflict, KubeConfigError, KubeError, Unsupported
from controller.kube.annotations import (
    COMMANDS_ANNOTATION,
    annotations_of,
    raw_commands,
    read_stored,
)
from controller.kube.client import KubeObjects, current_user
from controller.kube.commands import CommandNotDelivered, submit_command
from controller.kube.managed import read_managed
from controller.rollout.state import Command, CommandAction, Phase
from controller.routers import ROUTERS
from controller.routers.kserve_knative import KNATIVE, DeployRefused, deploy_patch


class _Target:
    def __init__(self, kubeconfig: Path | None, context: str | None,
                 namespace: str | None) -> None:
        try:
            self.api = config.new_client_from_config(
                config_file=str(kubeconfig) if kubeconfig else None, context=context)
            _, active = config.list_kube_config_contexts(
                config_file=str(kubeconfig) if kubeconfig else None)
        except (config.ConfigException, OSError, TypeError) as err:
            raise click.ClickException(str(KubeConfigError(
                f"cannot load kubeconfig {kubeconfig or '~/.kube/config'}: {err}"))) from err
        self.namespace = namespace or (active or {}).get("context", {}).get("namespace") \
            or "default"
        self.isvcs = self.objects([self.namespace])

    def objects(self, namespaces: list[str]) -> KubeObjects:
        """The InferenceServices (the resource today's routers drive) in ``namespaces``."""
        return KubeObjects(self.api, KNATIVE.resource, namespaces)


def _split(target: _Target, ref: str) -> tuple[str, str]:
    namespace, _, name = ref.rpartition("/")
    return namespace or target.namespace, name


kube_options = [
    click.option("--kubeconfig", type=click.Path(path_type=Path), envvar="KUBECONFIG",
                 help="Kubeconfig file (default $KUBECONFIG or ~/.kube/config)."),
    click.option("--context", help="Kubeconfig context."),
    click.option("-n", "--namespace", help="Namespace (default: the context's)."),
]


def with_kube(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(kube_options):
        fn = option(fn)
    return fn


def _age(since: datetime | None, now: datetime) -> str:
    if since is None:
        return "-"
    seconds = int((now - since).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _unsupported_row(obj: Mapping[str, Any], why: str, now: datetime) -> dict[str, Any]:
    stored = read_stored(obj)
    assert stored is not None           # only an object that opted in is unsupported
    state = stored.state
    return {"namespace": stored.namespace, "name": stored.name, "policy": stored.policy,
            "phase": "Unsupported", "step": None, "canaryPercent": None,
            "canaryRevision": None, "stableRevision": None, "lastVerdict": "",
            "lastDecision": why, "pause": None, "approvals": [],
            "rollout": state.id if state else None,
            "age": _age(state.started_at if state else None, now)}


def status_rows(objects: list[Mapping[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """One row per managed InferenceService, as `rollwise status` prints it; one that no
    router can drive shows as ``Unsupported``, with the reason."""
    rows = []
    for obj in objects:
        try:
            managed = read_managed(obj, ROUTERS)
        except Unsupported as err:
            rows.append(_unsupported_row(obj, str(err), now))
            continue
        if managed is None:
            continue
        state = managed.state
        obs = managed.observation
        rows.append({
            "namespace": managed.namespace,
            "name": managed.name,
            "policy": managed.policy,
            "phase": str(state.phase) if state else ("Unreadable" if managed.state_error
                                                     else "New"),
            "step": state.step + 1 if state else None,
            "canaryPercent": obs.canary_percent,
            "canaryRevision": state.revision if state else None,
            "stableRevision": obs.latest_rolled_out,
            "lastVerdict": state.last_verdict if state else "",
            "lastDecision": state.last_decision.reason if state and state.last_decision
            else (managed.state_error or ""),
            "pause": str(state.pause.reason) if state and state.pause else None,
            "approvals": [{"step": a.step + 1, "by": a.by, "via": a.via,
                           "at": a.at.isoformat()} for a in (state.approvals if state else ())],
            "rollout": state.id if state else None,
            "age": _age(state.started_at if state else None, now),
        })
    return rows


# What ``rollwise status`` shows, most important first when the terminal is narrow: the
# name and the phase always, the verdict (wrapped within its column) before the rest.
STATUS_COLUMNS = (
    Column("NAMESPACE", priority=5),
    Column("NAME", priority=9),
    Column("POLICY", priority=2),
    Column("PHASE", priority=8, min_width=11),
    Column("STEP", priority=3, align="right"),
    Column("CANARY%", priority=6, align="right"),
    Column("LAST VERDICT", priority=7, min_width=20, fit="wrap", max_lines=3),
    Column("AGE", priority=4, align="right"),
)
WIDE_COLUMNS = (*STATUS_COLUMNS, Column("CANARY REVISION"), Column("STABLE REVISION"),
                Column("ROLLOUT"))
OUTPUTS = ("table", "wide", "plain", "json", "yaml")


def _status_cells(row: Mapping[str, Any], wide: bool) -> list[str]:
    def text(value: object) -> str:
        return "-" if value is None or value == "" else str(value)

    cells = [row["namespace"], row["name"], row["policy"],
             row["phase"] + (f" ({row['pause']})" if row["pause"] else ""),
             text(row["step"]), text(row["canaryPercent"]),
             row["lastVerdict"] or row["lastDecision"], row["age"]]
    if wide:
        cells += [text(row["canaryRevision"]), text(row["stableRevision"]), text(row["rollout"])]
    return cells


def status_text(rows: list[dict[str, Any]], output: str, width: int) -> str:
    """``rows`` (``status_rows``) as ``rollwise status -o OUTPUT`` prints them, a ``table``
    laid out for ``width`` terminal cells (pure)."""
    if output == "json":
        return json.dumps(rows, indent=2)
    if output == "yaml":
        return yaml.safe_dump(rows, sort_keys=False, allow_unicode=True).rstrip("\n")
    wide = output == "wide"
    columns = WIDE_COLUMNS if wide else STATUS_COLUMNS
    cells = [_status_cells(r, wide) for r in rows]
    if output == "plain":
        return plain(columns, cells)
    return layout(columns, cells, None if wide else width).text()


@click.command(epilog="""\b
Output (-o):
  table  the default on a terminal: laid out for its width ($COLUMNS,
         else the terminal's, else 80); less important columns are left
         out and long verdicts wrapped within their column
  wide   every column, with revisions and the rollout id, nothing cut
  plain  the default when stdout is not a terminal, for scripts: a
         header line, then one line per InferenceService, fields
         separated by one tab, nothing cut, no colour, "-" for an
         empty field; the columns of 'table': NAMESPACE NAME POLICY
         PHASE STEP CANARY% LAST VERDICT AGE
  json, yaml  every field of every row""")
@with_kube
@click.argument("name", required=False)
@click.option("-A", "--all-namespaces", is_flag=True, help="Every namespace.")
@click.option("-o", "--output", type=click.Choice(OUTPUTS), default=None,
              help="table, wide, plain, json or yaml (see below).")
def status(kubeconfig: Path | None, context: str | None, namespace: str | None,
           name: str | None, all_namespaces: bool, output: str | None) -> None:
    """Show managed InferenceServices and their rollouts."""
    target = _Target(kubeconfig, context, namespace)
    isvcs = target.objects([] if all_namespaces else [target.namespace])
    try:
        objects = isvcs.list()
    except KubeError as err:
        raise click.ClickException(str(err)) from err
    rows = status_rows(objects, datetime.now(UTC))
    if name:
        rows = [r for r in rows if r["name"] == name]
        if not rows:
            raise click.ClickException(
                f"{target.namespace}/{name}: no managed InferenceService of that name "
                "(annotate it with rollwise.io/policy)")
    output = output or ("table" if terminal.stdout_is_terminal() else "plain")
    if not rows and output in ("table", "wide"):
        where = "any namespace" if all_namespaces else f"namespace {target.namespace}"
        click.echo(f"no InferenceService managed by Rollwise in {where}", err=True)
        return
    click.echo(status_text(rows, output, terminal.width() if output == "table" else 0))


def _send(action: CommandAction, ref: str, kubeconfig: Path | None, context: str | None,
          namespace: str | None, reason: str, step: int | None = None) -> None:
    target = _Target(kubeconfig, context, namespace)
    ns, name = _split(target, ref)
    try:
        obj = target.isvcs.get(ns, name)
    except KubeError as err:
        raise click.ClickException(str(err)) from err
    if obj is None:
        raise click.ClickException(f"{ns}/{name}: no such InferenceService")
    managed = read_stored(obj)
    if managed is None:
        raise click.ClickException(f"{ns}/{name} is not managed by Rollwise "
                                   "(no rollwise.io/policy annotation)")
    state = managed.state
    if action == "approve":
        if state is None or state.phase != Phase.PAUSED or state.pause is None:
            raise click.ClickException(f"{ns}/{name}: no approval is pending "
                                       f"(phase {state.phase if state else 'none'})")
        step = state.step if step is None else step - 1
    try:
        who = current_user(target.api)
    except KubeError:
        who = "unknown"
    # ``by`` is only a claim: the commands admission webhook replaces it with the user the
    # API server authenticated, and the controller acts only on entries it stamped.
    command = Command(id=uuid.uuid4().hex[:12], action=action, by=who, at=datetime.now(UTC),
                      rollout=state.id if state else None, step=step, reason=reason)
    try:
        submit_command(target.isvcs, ns, name, command)
        written = target.isvcs.get(ns, name)
    except (KubeError, CommandNotDelivered) as err:
        raise click.ClickException(str(err)) from err
    entry = next((e for e in raw_commands(annotations_of(written or {}).get(
        COMMANDS_ANNOTATION)) if e.get("id") == command.id), None)
    if entry is not None and "seal" not in entry:
        raise click.ClickException(
            f"command {command.id} was written to {ns}/{name} but not authenticated by the "
            "rollwise commands admission webhook (is it installed? see docs/operations.md): "
            "the controller will refuse it")
    as_whom = str(entry.get("by", who)) if entry is not None else who
    click.echo(f"{action} requested for {ns}/{name} as {as_whom} (command {command.id}); "
               "the controller acts on it within one analysis interval")


def _command(action: CommandAction, help_text: str) -> click.Command:
    @click.command(name=action, help=help_text)
    @with_kube
    @click.argument("ref", metavar="[NAMESPACE/]NAME")
    @click.option("--reason", default="", help="Why (kept in the audit trail).")
    def run(kubeconfig: Path | None, context: str | None, namespace: str | None, ref: str,
            reason: str) -> None:
        _send(action, ref, kubeconfig, context, namespace, reason)

    return run


promote = _command("promote", "Promote the canary now, skipping the remaining steps.")
abort = _command("abort", "Roll back to the stable revision and mark the rollout aborted.")
retry = _command("retry", "Restart a failed, aborted or blocked rollout from the first step.")
pause = _command("pause", "Hold the rollout at its current step.")
resume = _command("resume", "Resume a rollout paused by an operator, a hand edit or a timeout.")


@click.command()
@with_kube
@click.argument("ref", metavar="[NAMESPACE/]NAME")
@click.option("--step", type=int, help="The step being approved (default: the pending one).")
@click.option("--reason", default="")
def approve(kubeconfig: Path | None, context: str | None, namespace: str | None, ref: str,
            step: int | None, reason: str) -> None:
    """Approve the paused step so that the rollout moves on."""
    _send("approve", ref, kubeconfig, context, namespace, reason, step)


@click.command()
@with_kube
@click.argument("ref", metavar="[NAMESPACE/]NAME")
@click.option("--storage-uri", required=True, help="The new model's URI.")
def deploy(kubeconfig: Path | None, context: str | None, namespace: str | None, ref: str,
           storage_uri: str) -> None:
    """Deploy a new model: set its storageUri and hold its traffic at 0% in ONE update, so
    the model never gets traffic before Rollwise has analysed it (the controller moves
    it to the policy's first step when its revision is ready)."""
    uri = storage_uri
    target = _Target(kubeconfig, context, namespace)
    ns, name = _split(target, ref)
    try:
        obj = target.isvcs.get(ns, name)
    except KubeError as err:
        raise click.ClickException(str(err)) from err
    if obj is None:
        raise click.ClickException(f"{ns}/{name}: no such InferenceService")
    try:
        patch = deploy_patch(obj, uri)
    except DeployRefused as err:
        raise click.ClickException(str(err)) from err
    if patch is None:
        raise click.ClickException(f"{ns}/{name} already serves {uri}")
    try:
        target.isvcs.patch(ns, name, patch)
    except Conflict as err:
        raise click.ClickException(f"{ns}/{name} changed while deploying; try again ({err})") \
            from err
    except KubeError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"deployed {uri} to {ns}/{name}; canary held at 0% until its revision is ready")


ROLLOUT_COMMANDS = [status, promote, abort, retry, approve, pause, resume, deploy]
