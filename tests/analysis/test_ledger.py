"""The evidence ledger (controller/analysis/ledger.py, looks.py): blocks close once an
interval, warm-up is flagged, a step change starts a new anchor, the state's JSON round
trips, and the cap keeps every event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.analysis import ledger as L
from controller.analysis import looks
from controller.analysis.ledger import Block, EventLedger, Tally
from controller.analysis.types import HistogramCounts, RatioCounts, StepWindow
from controller.policy.model import Analysis

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
ANALYSIS = Analysis.model_validate({"checks": [
    {"name": "errors", "kind": "ratio"},
    {"name": "p99", "kind": "latency", "quantile": 0.99},
    {"name": "drift", "kind": "distribution"}]})
ERRORS, P99, DRIFT = ANALYSIS.checks


def ratio(canary: tuple[float, float], stable: tuple[float, float]) -> StepWindow[RatioCounts]:
    """(requests, errors) of each revision."""
    return StepWindow(RatioCounts(stable[1], stable[0]), RatioCounts(canary[1], canary[0]))


def observe(ledger: EventLedger, cumulative: Tally, step: int, start: datetime,
            now: datetime) -> tuple[EventLedger, L.Look]:
    return L.observe(ledger, cumulative, step=step, step_started_at=start, now=now,
                     interval=MINUTE, warmup=2 * MINUTE)


def test_an_interval_closes_at_the_first_look_one_interval_after_it_opened() -> None:
    ledger = EventLedger()
    for seconds, errors in ((10, 1), (30, 2), (59, 3)):
        ledger, look = observe(ledger, Tally(100 * seconds, errors, 1900 * seconds, 20, errors),
                               0, T0, T0 + timedelta(seconds=seconds))
        assert ledger.blocks == () and look.current is not None
        assert look.current.tally.canary_events == errors
    ledger, look = observe(ledger, Tally(6100, 4, 115_900, 21, 4), 0, T0, T0 + 61 * timedelta(
        seconds=1))
    (block,) = ledger.blocks
    assert look.current is None and block.tally.canary_events == 4 and block.seconds == 61
    ledger, look = observe(ledger, Tally(7000, 6, 133_000, 25, 6), 0, T0,
                           T0 + timedelta(seconds=75))
    assert look.current is not None and look.current.tally.canary_events == 2  # since close


def test_warm_up_blocks_are_flagged_per_step_and_a_new_step_starts_a_new_anchor() -> None:
    ledger = EventLedger()
    cumulative = Tally()
    for minute in range(1, 5):
        cumulative = cumulative.plus(Tally(1000, 5, 19000, 95, 5))
        ledger, _ = observe(ledger, cumulative, 0, T0, T0 + minute * MINUTE)
    assert [b.warmup for b in ledger.blocks] == [True, True, False, False]
    start = T0 + 4 * MINUTE
    ledger, look = observe(ledger, Tally(500, 2, 9500, 40, 2), 1, start, start + 30 * timedelta(
        seconds=1))
    assert look.current is not None and look.current.warmup and look.current.step == 1
    assert look.current.tally.canary_exposure == 500       # the new step counts from zero


def test_the_dispersion_of_a_block_is_fixed_when_it_opens() -> None:
    """A block is tempered with what was known before it began (predictable)."""
    ledger = EventLedger(reference=tuple((float(x), 57_000.0) for x in
                                         (200, 400, 150, 500, 250, 300, 600, 100) * 4))
    ledger, first = observe(ledger, Tally(100, 1, 1900, 10, 1), 0, T0, T0 + timedelta(seconds=5))
    assert first.current is not None
    opened = first.current.kappa
    assert opened > 0                                     # stable's history is overdispersed
    ledger, later = observe(ledger, Tally(3000, 90, 57_000, 280, 90), 0, T0,
                            T0 + timedelta(seconds=50))
    assert later.current is not None and later.current.kappa == opened


def test_the_json_form_round_trips_and_rejects_nonsense() -> None:
    ledger = EventLedger(reference=((3.0, 600.0),), reference_tried=True,
                         blocks=(Block(0, True, Tally(60, 1, 540, 3, 1), 0.1, 0.2, 61),),
                         step=0, step_started_at=T0, block_started_at=T0 + MINUTE,
                         anchor=Tally(60, 1, 540, 3, 1), kappa=0.1, c2=0.2, bound=0.3,
                         guard_bound=0.5)
    assert L.ledger_from_json(L.ledger_to_json(ledger)) == ledger
    broken = L.ledger_to_json(ledger)
    broken["blocks"][0][3] = -5
    with pytest.raises(ValueError, match="negative"):
        L.ledger_from_json(broken)
    with pytest.raises(ValueError, match="unreadable"):
        L.ledger_from_json({"blocks": [[1]]})


def test_the_cap_merges_old_blocks_and_keeps_every_event() -> None:
    blocks = tuple(Block(0, False, Tally(100, 1, 900, 9, 1), 0.0, 0.0, 60)
                   for _ in range(L.MAX_BLOCKS + 10))
    capped = L.capped(blocks)
    assert len(capped) <= L.MAX_BLOCKS
    assert sum(b.tally.canary_events for b in capped) == L.MAX_BLOCKS + 10
    assert sum(b.seconds for b in capped) == 60 * (L.MAX_BLOCKS + 10)


def test_a_look_returns_the_ledger_to_keep_and_the_one_if_the_step_ends_now() -> None:
    timing = looks.Timing(0, T0, T0 + timedelta(seconds=30), MINUTE, timedelta(0))
    seen = looks.look(ERRORS, looks.empty(ERRORS), ratio((300, 1), (5700, 30)), timing)
    assert isinstance(seen.keep, EventLedger) and isinstance(seen.closing, EventLedger)
    assert seen.keep.blocks == () and len(seen.closing.blocks) == 1   # open block flushed
    assert seen.closed_block              # the step's first look anchors it: kept once
    again = looks.look(ERRORS, seen.keep, ratio((400, 1), (7600, 40)), looks.Timing(
        0, T0, T0 + timedelta(seconds=40), MINUTE, timedelta(0)))
    assert not again.closed_block         # a look inside the interval changes nothing kept


def test_a_latency_check_fixes_its_bounds_from_stable_history() -> None:
    bounds = (0.1, 0.2, 0.3, 0.5)
    history = [HistogramCounts(bounds, (500, 400, 80, 15, 5))] * 30
    ledger = looks.with_reference(P99, looks.empty(P99), history)
    assert isinstance(ledger, EventLedger) and ledger.bound == 0.5 and ledger.reference_tried
    assert len(ledger.reference) == 30 and ledger.reference[0] == (5.0, 1000.0)
    window = StepWindow(HistogramCounts(bounds, (50, 40, 8, 1, 1)),
                        HistogramCounts(bounds, (5, 4, 0, 0, 1)))
    timing = looks.Timing(0, T0, T0 + timedelta(seconds=30), MINUTE, timedelta(0))
    seen = looks.look(P99, ledger, window, timing)
    assert isinstance(seen.keep, EventLedger) and seen.keep.bound == 0.5   # not moved


def test_drift_counts_only_what_came_after_warm_up() -> None:
    bounds = (0.5,)
    ledger = looks.empty(DRIFT)
    warm = looks.Timing(0, T0, T0 + MINUTE, MINUTE, 2 * MINUTE)
    seen = looks.look(DRIFT, ledger, StepWindow(HistogramCounts(bounds, (50, 50)),
                                                HistogramCounts(bounds, (5, 5))), warm)
    assert seen.measurement.windows == ()                 # in warm-up: nothing to compare
    after = looks.Timing(0, T0, T0 + 2 * MINUTE, MINUTE, 2 * MINUTE)
    seen = looks.look(DRIFT, seen.keep, StepWindow(HistogramCounts(bounds, (100, 100)),
                                                   HistogramCounts(bounds, (10, 10))), after)
    assert seen.closed_block                              # the anchor must be kept
    later = looks.Timing(0, T0, T0 + 3 * MINUTE, MINUTE, 2 * MINUTE)
    seen = looks.look(DRIFT, seen.keep, StepWindow(HistogramCounts(bounds, (160, 140)),
                                                   HistogramCounts(bounds, (16, 14))), later)
    (window,) = seen.measurement.windows
    assert window.baseline.counts == (60, 40) and window.canary.counts == (6, 4)


def test_step_totals_sum_a_steps_blocks_for_the_lineage_record() -> None:
    ledger = EventLedger(blocks=(Block(0, False, Tally(100, 1, 900, 9, 1)),
                                 Block(0, False, Tally(50, 2, 450, 4, 2)),
                                 Block(1, False, Tally(500, 5, 500, 5, 5))))
    totals = looks.step_totals({"errors": looks.to_json(ledger)}, 0)
    assert totals == {"errors": {"canary_requests": 150.0, "canary_events": 3.0,
                                 "stable_requests": 1350.0, "stable_events": 13.0}}
