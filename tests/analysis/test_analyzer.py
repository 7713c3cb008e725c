"""The analyzer on the shipped fake provider: the queries it sends, what it does with
stable's history, and the notice people get when that history is short."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.analysis.types import Quality
from controller.analyzer import MetricAnalyzer
from controller.judging import AnalysisRequest
from controller.policy.loader import load_text
from controller.policy.model import RolloutPolicy
from controller.providers.fakes import FakeProvider
from controller.providers.presets import Template, templates_for
from controller.rollout.machine import Judgement

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
POLICY = """
apiVersion: rollwise.io/v1alpha1
kind: RolloutPolicy
metadata: {name: errors-only}
spec:
  steps: [{weight: 10}, {weight: 100}]
  analysis:
    interval: 1m
    history: 30m
    checks:
      - {name: error-rate, kind: ratio, tolerance: 0.25}
"""


def policy(text: str = POLICY) -> RolloutPolicy:
    return load_text(text, "errors-only.yaml")[0].policy


def request(p: RolloutPolicy, *, evidence: dict[str, object] | None = None,
            started: datetime = T0) -> AnalysisRequest:
    return AnalysisRequest(key="models/churn", namespace="models", service="churn",
                           canary_revision="churn-00002", baseline_revision="churn-00001",
                           step_started_at=started, policy=p, evidence=evidence or {},
                           min_requests=100, rollout_id="r1", step=0)


def templates(p: RolloutPolicy) -> tuple[Template, Template]:
    check = p.spec.analysis.checks[0]
    found = templates_for(check, p.spec.analysis.provider)
    return found["total"], found["errors"]


def provider_with(p: RolloutPolicy, history_intervals: int) -> FakeProvider:
    total, errors = templates(p)
    fake = FakeProvider()
    fake.values = {total: {"churn-00002": 1200.0, "churn-00001": 10800.0},
                   errors: {"churn-00002": 6.0, "churn-00001": 54.0}}
    if history_intervals:
        fake.history = {total: {"churn-00001": [6000.0] * history_intervals},
                        errors: {"churn-00001": [30.0] * history_intervals}}
    return fake


def look(fake: FakeProvider, req: AnalysisRequest, minutes: float = 2) -> Judgement:
    return MetricAnalyzer(fake).judge([req], T0 + timedelta(minutes=minutes))["models/churn"]


def test_a_full_history_is_asked_once_in_one_range_query_and_kept() -> None:
    p = policy()
    fake = provider_with(p, 30)
    judgement = look(fake, request(p), minutes=0.5)  # inside the first interval
    assert len(fake.history_fetches) == 2  # total and errors, each one range query
    _, parts, start, end, step = fake.history_fetches[0]
    assert (end - start, step) == (timedelta(minutes=30), 60)
    assert [part.revisions for part in parts] == [("churn-00001",)]
    assert judgement.notice is None
    # Kept at once (a write), so the next look does not ask again.
    assert judgement.changed and judgement.evidence is not None
    again = look(fake, request(p, evidence=dict(judgement.evidence)), minutes=0.6)
    assert len(fake.history_fetches) == 2
    assert again.notice is None


@pytest.mark.parametrize("found", [0, 3, 14])
def test_a_short_history_is_told_with_what_was_found(found: int) -> None:
    p = policy()
    judgement = look(provider_with(p, found), request(p))
    assert judgement.notice is not None
    assert f"error-rate {found} of 30" in judgement.notice
    assert "churn-00001" in judgement.notice
    assert "1m intervals with traffic in the last 30m" in judgement.notice
    assert "weighed as if it varied a lot" in judgement.notice


def test_half_the_history_is_enough_to_say_nothing() -> None:
    p = policy()
    assert look(provider_with(p, 15), request(p)).notice is None


def test_a_failed_history_query_is_named_in_the_notice() -> None:
    p = policy()
    fake = provider_with(p, 30)
    total, _ = templates(p)
    fake.failing[total] = (Quality.ERROR, "history query failed: HTTP 503")
    fake.values[total] = {"churn-00002": 1200.0, "churn-00001": 10800.0}
    judgement = look(fake, request(p))
    assert judgement.notice is not None
    assert "error-rate 0 of 30: history query failed: HTTP 503" in judgement.notice


def test_history_is_kept_even_when_the_current_counts_are_missing() -> None:
    # Else the range query would be asked again at every look until the data came back.
    p = policy()
    fake = provider_with(p, 30)
    total, _ = templates(p)
    fake.failing[total] = (Quality.ERROR, "query failed: HTTP 503")
    first = look(fake, request(p), minutes=0.5)
    assert first.missing and first.changed and first.evidence is not None
    look(fake, request(p, evidence=dict(first.evidence)), minutes=0.6)
    assert len(fake.history_fetches) == 2


def test_no_history_asked_no_notice() -> None:
    p = policy(POLICY.replace("history: 30m", "history: 0s"))
    fake = provider_with(p, 0)
    judgement = look(fake, request(p))
    assert fake.history_fetches == []
    assert judgement.notice is None


def test_missing_current_data_is_never_healthy() -> None:
    p = policy()
    fake = provider_with(p, 30)
    fake.values = {}
    judgement = look(fake, request(p))
    assert judgement.missing and judgement.outcome == "continue"
