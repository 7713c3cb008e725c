"""Prometheus runner: config, install logic, start failures, and the end-to-end scrape."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_api_client import PrometheusConnect

from simulations import prometheus as prom_module
from simulations.endpoints import Behaviour, EndpointFleet, MetricsFlavour
from simulations.prometheus import (
    PrometheusNotInstalled,
    PrometheusServer,
    PrometheusStartError,
    ensure_prometheus,
)
from simulations.traffic import TrafficGenerator

NS, ISVC = "team-a", "fraud"
REV1, REV2, REV3 = "fraud-predictor-00001", "fraud-predictor-00002", "fraud-predictor-00003"


# --------------------------------------------------------------------------- unit


def test_config_scrapes_the_file_sd_file(tmp_path: Path) -> None:
    server = PrometheusServer(sd_file=tmp_path / "sd.json", scrape_interval="2s")
    config = server.config()
    assert config["global"]["scrape_interval"] == "2s"
    assert config["global"]["scrape_timeout"] == "2s"  # may not exceed the interval
    (job,) = config["scrape_configs"]
    assert job["honor_labels"] is True
    assert job["file_sd_configs"] == [
        {"files": [str((tmp_path / "sd.json").resolve())], "refresh_interval": "1s"}
    ]


def test_missing_binary_without_root_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prom_module, "_find_binary", lambda: None)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PrometheusNotInstalled, match="apt-get install"):
        ensure_prometheus()


def test_missing_binary_as_root_installs_then_updates_lists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    commands: list[list[str]] = []
    installed: list[Path] = []

    def fake_run(command: list[str], env: dict[str, str]) -> str | None:
        commands.append(command)
        assert env["DEBIAN_FRONTEND"] == "noninteractive"
        if command[1] == "install" and len(commands) == 1:
            return "E: Unable to locate package prometheus"
        if command[1] == "install":
            installed.append(Path("/usr/bin/prometheus"))
        return None

    monkeypatch.setattr(prom_module, "_find_binary", lambda: installed[0] if installed else None)
    monkeypatch.setattr(prom_module, "_run", fake_run)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert ensure_prometheus() == Path("/usr/bin/prometheus")
    assert [c[1] for c in commands] == ["install", "update", "install"]


# --------------------------------------------------------------------------- e2e helpers


def wait_for(
    read: Callable[[], Any], expected: Any, timeout_s: float = 20.0, interval_s: float = 0.25
) -> Any:
    """Poll ``read()`` until it returns ``expected``; return the last value either way."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(interval_s)
        value = read()
    return value


def by_label(prom: PrometheusConnect, query: str, label: str) -> dict[str, float]:
    return {r["metric"][label]: float(r["value"][1]) for r in prom.custom_query(query)}


def scalar(prom: PrometheusConnect, query: str) -> float | None:
    result = prom.custom_query(query)
    return float(result[0]["value"][1]) if result else None


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fleet of two revisions scraped by a private Prometheus; checks the teardown."""
    flavour: MetricsFlavour = getattr(request, "param", "queue-proxy-legacy")
    # Other tests' session-wide worlds run endpoints too: only this fleet's must be gone.
    before = set(threading.enumerate())
    sd_file = tmp_path / "targets.json"
    fleet = EndpointFleet(sd_file, flavour=flavour, seed=5)
    server = PrometheusServer(sd_file=sd_file, workdir=tmp_path)
    try:
        fleet.add(NS, ISVC, REV1, Behaviour())
        fleet.add(NS, ISVC, REV2, Behaviour(latency_median_ms=60, error_rate=0.05))
        with server:
            pid = server.pid
            server.wait_for_targets({e.address for e in fleet})
            yield fleet, server, PrometheusConnect(url=server.url, disable_ssl=True)
    finally:
        fleet.close()
    assert pid is not None and process_gone(pid)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("rollwise-prometheus-")]
    assert not [t for t in threading.enumerate()
                if t not in before and t.name.startswith(("endpoint-", "traffic-"))]


def drive(fleet: EndpointFleet, split: list[tuple[str, float]], n: int) -> TrafficGenerator:
    generator = TrafficGenerator(
        lambda: split, rate_rps=500, seed=8, max_requests=n, model_name=ISVC
    )
    with generator:
        assert generator.wait(timeout=60)
    sent = sum(generator.sent.values())
    assert sent + generator.dropped == n and sent >= 0.9 * n  # drops only when overloaded
    return generator


# --------------------------------------------------------------------------- e2e


@pytest.mark.e2e
def test_prometheus_sees_the_split_and_new_endpoints(world: Any) -> None:
    fleet, server, prom = world
    one, two = fleet.get(NS, REV1), fleet.get(NS, REV2)
    pid = server.pid
    n = 2000
    generator = drive(fleet, [(one.url, 25), (two.url, 75)], n)
    expected = {REV1: float(generator.sent[one.url]), REV2: float(generator.sent[two.url])}

    query = "sum by (revision_name) (revision_app_request_count)"
    counted = wait_for(lambda: by_label(prom, query, "revision_name"), expected)
    assert counted == expected  # every request, once, under its revision
    assert abs(counted[REV1] / sum(counted.values()) - 0.25) <= 0.04

    # The labels Prometheus stored are the exposed ones plus job/instance and file-sd's.
    (series,) = prom.custom_query(f'revision_app_request_count{{revision_name="{REV1}"}}')
    assert set(series["metric"]) == {
        "__name__", "job", "instance", "namespace", "pod", "configuration_name",
        "container_name", "namespace_name", "pod_name", "response_code",
        "response_code_class", "revision_name", "service_name",
    }  # fmt: skip
    failed = 'sum by (revision_name) (revision_app_request_count{response_code_class="5xx"})'
    assert set(by_label(prom, failed, "revision_name")) <= {REV2}
    median = scalar(
        prom,
        "histogram_quantile(0.5, sum by (le) (revision_app_request_latencies_bucket"
        f'{{revision_name="{REV1}"}}))',
    )
    assert median is not None and 20 <= median <= 60  # 40 ms, interpolated in ms buckets

    # A revision added later is discovered through the file_sd file.
    three = fleet.add(NS, ISVC, REV3, Behaviour())
    server.wait_for_targets({three.address}, timeout_s=30)
    sent3 = float(drive(fleet, [(three.url, 100)], 50).sent[three.url])
    query3 = f'sum(revision_app_request_count{{revision_name="{REV3}"}})'
    assert wait_for(lambda: scalar(prom, query3), sent3) == sent3
    assert pid is not None and not process_gone(pid)


@pytest.mark.e2e
@pytest.mark.parametrize("world", ["queue-proxy-otel"], indirect=True)
def test_otel_flavour_joins_revision_from_target_info(world: Any) -> None:
    fleet, _, prom = world
    one, two = fleet.get(NS, REV1), fleet.get(NS, REV2)
    generator = drive(fleet, [(one.url, 25), (two.url, 75)], 1000)
    expected = {REV1: float(generator.sent[one.url]), REV2: float(generator.sent[two.url])}
    query = (
        "sum by (kn_revision_name) (kn_serving_invocation_duration_seconds_count"
        " * on (job, instance) group_left (kn_revision_name) target_info)"
    )
    assert wait_for(lambda: by_label(prom, query, "kn_revision_name"), expected) == expected


@pytest.mark.e2e
def test_start_failure_reports_the_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = PrometheusServer(sd_file=tmp_path / "sd.json", workdir=tmp_path, port=port)
        with pytest.raises(PrometheusStartError, match="address already in use"):
            server.__enter__()
    assert server.pid is None
    assert list(tmp_path.iterdir()) == []  # temp dir removed on failure too
