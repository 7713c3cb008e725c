"""``rollwise prediction-sink``: receive KServe payload-logger CloudEvents and export
per-revision prediction histograms for the drift checks (docs/prediction-sink.md)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click
from pydantic import ValidationError

from controller.errors import KubeConfigError, RollwiseError


@click.command("prediction-sink")
def prediction_sink() -> None:
    """Run the prediction sink until SIGTERM. Configured by ROLLWISE_SINK_* variables."""
    from controller.kube.client import api_client
    from controller.logs import configure_logging
    from controller.policy.loader import load_file
    from controller.policy.yamldoc import PolicyError
    from controller.sink.histograms import (
        DEFAULT_BOUNDS,
        PredictionHistograms,
        bounds_from_policies,
    )
    from controller.sink.revisions import KubeOwners, RevisionMapper
    from controller.sink.server import PredictionSink, listener
    from controller.sink.settings import load_sink_settings

    try:
        settings = load_sink_settings()
    except (ValidationError, ValueError) as err:
        raise click.ClickException(f"invalid settings: {err}") from err
    try:
        if settings.buckets:
            bounds: tuple[float, ...] | list[float] = settings.buckets
        elif settings.reference_policy is not None:
            bounds = bounds_from_policies(
                [p.policy for p in load_file(settings.reference_policy)], settings.metric)
        else:
            bounds = DEFAULT_BOUNDS
        histograms = PredictionHistograms(
            bounds, metric=settings.metric, max_revisions=settings.max_revisions,
            max_classes=settings.max_classes, idle_seconds=settings.idle_seconds)
        api = api_client(settings.kubernetes, "prediction-sink")
    except (ValueError, PolicyError, RollwiseError, KubeConfigError) as err:
        raise click.ClickException(str(err)) from err
    configure_logging(settings.log_format, settings.log_level)
    mapper = RevisionMapper(KubeOwners(api), capacity=settings.pod_cache,
                            negative_seconds=settings.negative_seconds)
    sink = PredictionSink(histograms, mapper, output=settings.output,
                          max_predictions=settings.max_predictions)
    server = listener(sink, settings.listen_address, read_timeout=settings.read_timeout,
                      max_connections=settings.max_connections, max_body=settings.max_body)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    server.start()
    click.echo(f"prediction sink on {settings.listen_address} (buckets {list(histograms.bounds)})",
               err=True)
    stop.wait()
    server.stop()
