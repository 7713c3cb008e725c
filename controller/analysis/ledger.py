"""The evidence a rollout accumulates, one analysis interval (a *block*) at a time, and how
each look adds to it.

Pure: plain frozen dataclasses and functions; the metric provider's cumulative counts in,
the next ledger and the evidence for the judges out. The controller keeps the ledger in
the rollout state (compact: a few numbers per interval), the benchmark drives the same
functions, so what is benchmarked is what runs.

Why blocks. The unit of evidence is an interval, not a request: per-interval variation
(``dispersion``) is estimated from the blocks, each block is tempered by what was known
before it began, and the partial block of the current interval is judged at every look
with the same tempering, so the controller may look every few seconds (a gross regression
is caught within seconds) while the evidence stays valid (``dispersion`` has the
argument).

Per check, an ``EventLedger`` (error rate, or slow requests for a latency check) holds:

* ``reference``: the stable revision's own recent intervals before the rollout (events and
  exposure), which give the dispersion of the traffic from the first block on;
* ``blocks``: every closed interval of the rollout (per step, warm-up flagged), with the
  dispersion parameters that temper it, fixed when the block began;
* ``anchor``: the current step's cumulative counts at the last block boundary, so that the
  next look's partial block is the provider's cumulative counts minus the anchor.

Warm-up: a step's first ``warmup`` of time (new pods start cold: JIT, caches, lazy model
loading) is kept out of the relative comparison and out of the dispersion estimate; the
gross guards still judge it (``ratio`` and ``latency`` decide which).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from controller.analysis import dispersion
from controller.analysis.dispersion import Dispersion

# At most this many closed blocks are kept per check: a 24 h rollout at a 1 m interval has
# 1,440; beyond the cap the oldest blocks are merged pairwise into blocks of twice the
# length, which keeps their events and exposures (the evidence in them) and only coarsens
# the dispersion estimate's view of the past.
MAX_BLOCKS = 240


@dataclass(frozen=True)
class Tally:
    """Cumulative or per-block counts of one event-rate check: per revision, requests and
    the events of the relative test; the canary's events of the absolute guard (the same
    as the relative test's for an error rate; slow requests at the guard's latency bound
    for a latency check)."""

    canary_exposure: float = 0.0
    canary_events: float = 0.0
    baseline_exposure: float = 0.0
    baseline_events: float = 0.0
    canary_guard_events: float = 0.0

    def minus(self, other: Tally) -> Tally:
        """This tally less an earlier one of the same step, never below zero (Prometheus'
        extrapolated increases can dip)."""
        return Tally(*(max(a - b, 0.0) for a, b in zip(self.values(), other.values(),
                                                        strict=True)))

    def plus(self, other: Tally) -> Tally:
        return Tally(*(a + b for a, b in zip(self.values(), other.values(), strict=True)))

    def values(self) -> tuple[float, float, float, float, float]:
        return (self.canary_exposure, self.canary_events, self.baseline_exposure,
                self.baseline_events, self.canary_guard_events)


@dataclass(frozen=True)
class Block:
    """One analysis interval of one step, with the dispersion that tempers it."""

    step: int
    warmup: bool
    tally: Tally
    kappa: float = 0.0        # unshared variation of the canary's share (relative test)
    c2: float = 0.0           # the canary's own variation (absolute guards)
    seconds: float = 0.0      # how long it lasted (a merged block: the sum)

    def share_phi(self, ratio: float) -> float:
        """The relative test's tempering factor for this block at the null ratio."""
        t = self.tally
        if t.canary_exposure <= 0 or t.baseline_exposure <= 0:
            return 1.0
        s = ratio * t.canary_exposure / t.baseline_exposure
        theta = s / (1.0 + s)
        information = (t.canary_events + t.baseline_events) * theta * (1.0 - theta)
        return 1.0 + self.kappa * information

    def guard_phi(self, bound: float) -> float:
        """The absolute guard's tempering factor at the guard's bound (expected events)."""
        return 1.0 + self.c2 * self.tally.canary_exposure * bound


@dataclass(frozen=True)
class EventLedger:
    reference: tuple[tuple[float, float], ...] = ()  # stable's own intervals: (events, n)
    reference_tried: bool = False     # stable's history was asked for (found or not)
    blocks: tuple[Block, ...] = ()
    step: int = -1                    # the step the anchor belongs to
    step_started_at: datetime | None = None
    block_started_at: datetime | None = None
    anchor: Tally = field(default_factory=Tally)
    kappa: float | None = None        # dispersion of the open block, fixed when it began
    c2: float | None = None
    bound: float | None = None        # latency: the relative test's tail bound (seconds)
    guard_bound: float | None = None  # latency: the guard's tail bound (seconds)

    @property
    def stable_dispersion(self) -> Dispersion:
        """Stable's own interval-to-interval variation: its history and the rollout's
        closed blocks (stable is never in warm-up: it is not the new revision)."""
        events = [e for e, _ in self.reference] + [b.tally.baseline_events for b in self.blocks]
        exposure = [n for _, n in self.reference] + [b.tally.baseline_exposure
                                                     for b in self.blocks]
        return dispersion.revision_dispersion(events, exposure)


@dataclass(frozen=True)
class Look:
    """What one look sees of one event-rate check: the closed blocks and the open one."""

    blocks: tuple[Block, ...]
    current: Block | None             # the open interval so far (None before any data)
    reference: tuple[tuple[float, float], ...]

    @property
    def all_blocks(self) -> tuple[Block, ...]:
        return self.blocks if self.current is None else (*self.blocks, self.current)


def _estimate_ratio(blocks: Sequence[Block]) -> float:
    """A pooled estimate of the canary/stable rate ratio (Mantel-Haenszel over blocks):
    the centre the share residuals are taken around."""
    num = den = 0.0
    for b in blocks:
        t = b.tally
        total = t.canary_exposure + t.baseline_exposure
        if total <= 0:
            continue
        num += t.canary_events * t.baseline_exposure / total
        den += t.baseline_events * t.canary_exposure / total
    return num / den if den > 0 and num > 0 else 1.0


def open_block_dispersion(ledger: EventLedger) -> tuple[float, float]:
    """(kappa, c2) for the block that opens now, from what is known now: stable's history
    and the closed blocks that are not warm-up. Upper ends of their posteriors."""
    stable = ledger.stable_dispersion
    judged = [b for b in ledger.blocks if not b.warmup]
    ratio = _estimate_ratio(judged)
    share = dispersion.share_dispersion(
        [b.tally.canary_events for b in judged], [b.tally.canary_exposure for b in judged],
        [b.tally.baseline_events for b in judged], [b.tally.baseline_exposure for b in judged],
        ratio, stable)
    canary = dispersion.revision_dispersion(
        [b.tally.canary_guard_events for b in judged],
        [b.tally.canary_exposure for b in judged], prior_mean=max(stable.mean, 1e-4))
    # The larger of what the share residuals show and what stable's own variation implies
    # for two revisions that move independently like it (the A/A assumption): the share's
    # estimate alone runs low under heavy-tailed effects, where a few intervals decide.
    kappa = max(share.value, dispersion.share_kappa(stable.value))
    return kappa, max(canary.value, stable.value)


def observe(ledger: EventLedger, cumulative: Tally, *, step: int, step_started_at: datetime,
            now: datetime, interval: timedelta, warmup: timedelta) -> tuple[EventLedger, Look]:
    """Add one look's counts (the current step's cumulative ``Tally`` since it began) to the
    ledger: close the open block when it is one interval old, start a new step's anchor
    when the step changed. Returns the new ledger and what the judges see."""
    if ledger.step != step or ledger.step_started_at != step_started_at:
        kappa, c2 = open_block_dispersion(ledger)
        ledger = replace(ledger, step=step, step_started_at=step_started_at,
                         block_started_at=step_started_at, anchor=Tally(), kappa=kappa, c2=c2)
    assert ledger.block_started_at is not None and ledger.kappa is not None
    assert ledger.c2 is not None
    partial = cumulative.minus(ledger.anchor)
    block_warm = ledger.block_started_at < step_started_at + warmup
    elapsed = (now - ledger.block_started_at).total_seconds()
    current = Block(step, block_warm, partial, ledger.kappa, ledger.c2, max(elapsed, 0.0))
    if elapsed >= interval.total_seconds():
        blocks = capped((*ledger.blocks, current))
        closed = replace(ledger, blocks=blocks, anchor=cumulative, block_started_at=now)
        kappa, c2 = open_block_dispersion(closed)
        closed = replace(closed, kappa=kappa, c2=c2)
        return closed, Look(closed.blocks, None, closed.reference)
    return ledger, Look(ledger.blocks, current, ledger.reference)


def capped(blocks: tuple[Block, ...]) -> tuple[Block, ...]:
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    merged: list[Block] = []
    old, keep = blocks[: MAX_BLOCKS // 2], blocks[MAX_BLOCKS // 2:]
    for i in range(0, len(old) - 1, 2):
        a, b = old[i], old[i + 1]
        if a.step != b.step or a.warmup != b.warmup:
            merged += [a, b]
            continue
        merged.append(Block(a.step, a.warmup, a.tally.plus(b.tally), max(a.kappa, b.kappa),
                            max(a.c2, b.c2), a.seconds + b.seconds))
    if len(old) % 2:
        merged.append(old[-1])
    return (*merged, *keep)


# --- the state's JSON form ----------------------------------------------------------------


def ledger_to_json(ledger: EventLedger) -> dict[str, Any]:
    """Compact: a block is a list of numbers, rounded to what the tests can tell apart."""
    def r(x: float) -> float:
        return float(f"{x:.6g}")

    return {
        "ref": [[r(e), r(n)] for e, n in ledger.reference], "ref_tried": ledger.reference_tried,
        "blocks": [[b.step, int(b.warmup), *(r(v) for v in b.tally.values()), r(b.kappa),
                    r(b.c2), r(b.seconds)] for b in ledger.blocks],
        "step": ledger.step,
        "step_at": _iso(ledger.step_started_at), "block_at": _iso(ledger.block_started_at),
        "anchor": [r(v) for v in ledger.anchor.values()],
        "kappa": ledger.kappa, "c2": ledger.c2, "bound": ledger.bound,
        "guard_bound": ledger.guard_bound,
    }


def ledger_from_json(raw: Mapping[str, Any]) -> EventLedger:
    """Read the JSON form back; raise ValueError naming what is wrong."""
    try:
        blocks = tuple(Block(int(b[0]), bool(b[1]), Tally(*(float(v) for v in b[2:7])),
                             float(b[7]), float(b[8]), float(b[9])) for b in raw["blocks"])
        for b in blocks:
            if not all(math.isfinite(v) and v >= 0 for v in (*b.tally.values(), b.kappa, b.c2)):
                raise ValueError("a block has a negative or non-finite number")
        return EventLedger(
            reference=tuple((float(e), float(n)) for e, n in raw.get("ref", ())),
            reference_tried=bool(raw.get("ref_tried", False)),
            blocks=blocks, step=int(raw.get("step", -1)),
            step_started_at=_time(raw.get("step_at")),
            block_started_at=_time(raw.get("block_at")),
            anchor=Tally(*(float(v) for v in raw.get("anchor", [0.0] * 5))),
            kappa=_optional(raw.get("kappa")), c2=_optional(raw.get("c2")),
            bound=_optional(raw.get("bound")), guard_bound=_optional(raw.get("guard_bound")))
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(f"unreadable evidence ledger: {type(err).__name__}: {err}") from err


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


# --- the drift check: per step, the histograms past warm-up --------------------------------


@dataclass(frozen=True)
class DriftLedger:
    """A distribution check's evidence: per closed step, the histograms (canary, stable)
    of its time past warm-up; for the current step, the cumulative histograms at the end
    of its warm-up (subtracted from the provider's cumulative ones) and its latest window
    past warm-up (kept when a block closes, so that a step that ends keeps its last)."""

    closed: tuple[tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]], ...] = ()
    step: int = -1
    step_started_at: datetime | None = None
    anchor: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    latest: tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]] | None = None
    saved_at: datetime | None = None     # when ``latest`` was last kept


def drift_to_json(ledger: DriftLedger) -> dict[str, Any]:
    def r(values: Sequence[float]) -> list[float]:
        return [float(f"{v:.6g}") for v in values]

    def window(w: tuple[tuple[float, ...], ...] | None) -> list[list[float]] | None:
        return None if w is None else [r(part) for part in w]

    return {"closed": [window(w) for w in ledger.closed], "step": ledger.step,
            "step_at": _iso(ledger.step_started_at), "anchor": window(ledger.anchor),
            "latest": window(ledger.latest), "saved_at": _iso(ledger.saved_at)}


def drift_from_json(raw: Mapping[str, Any]) -> DriftLedger:
    try:
        def window(w: Any, parts: int) -> Any:
            if w is None:
                return None
            if len(w) != parts:
                raise ValueError("a drift window has the wrong shape")
            return tuple(tuple(float(v) for v in part) for part in w)

        return DriftLedger(
            closed=tuple(window(w, 3) for w in raw.get("closed", ())),
            step=int(raw.get("step", -1)), step_started_at=_time(raw.get("step_at")),
            anchor=window(raw.get("anchor"), 2), latest=window(raw.get("latest"), 3),
            saved_at=_time(raw.get("saved_at")))
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(f"unreadable drift ledger: {type(err).__name__}: {err}") from err
