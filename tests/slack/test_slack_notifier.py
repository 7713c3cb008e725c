"""SlackNotifier against the local Slack (simulations.slack): one message per rollout
updated in place, thread replies by the policy's events, final states, buttons, rate
limits and outages that never block the reconciler."""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from controller.kube.annotations import SEAL_SLACK_MESSAGE, SLACK_MESSAGE_ANNOTATION
from controller.kube.fakes import FakeObjects
from controller.logs import configure_logging
from controller.notifications.slack import (
    ACTION_APPROVE,
    ACTION_ROLLBACK,
    AnnotationMessageRefs,
    ApprovalTarget,
    MessageRef,
    SlackNotifier,
    render,
)
from controller.settings import SlackSettings
from simulations.slack import Message, SlackSim
from tests.fakes import TEST_SEALER
from tests.slack.slack_helpers import (
    APPROVER,
    BOT_TOKEN,
    FAST,
    NAME,
    NAMESPACE,
    Rollout,
    isvc,
    metric,
    notifier_for,
    observed,
    policy,
    sim,
)

__all__ = ["sim"]   # the fixture


def actions_blocks(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [b for b in blocks if b.get("type") == "actions"]


def all_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks)


def only_message(sim: SlackSim) -> Message:
    messages = sim.top_level()
    assert len(messages) == 1, [m.text for m in messages]
    return messages[0]


def deliver(notifier: SlackNotifier, rollout: Rollout) -> None:
    """One snapshot at a time, as ticks of the reconciler would hand them over."""
    for snapshot in rollout.snapshots:
        notifier.notify(snapshot)
        assert notifier.wait_idle(10), "deliveries still queued"


# --- the message and its thread ---------------------------------------------------------


def test_one_message_per_rollout_updated_in_place_until_promoted(sim: SlackSim) -> None:
    spec = policy()
    rollout = Rollout(spec).to_approval()
    rollout.approve()
    rollout.promote()
    registry = CollectorRegistry()
    notifier = notifier_for(sim, spec, registry=registry)
    deliver(notifier, rollout)

    message = only_message(sim)
    assert message.channel == sim.channel_id("#ml-rollouts")
    top_posts = [c for c in sim.calls_to("chat.postMessage") if "thread_ts" not in c.params]
    assert len(top_posts) == 1
    assert message.updates == len(sim.calls_to("chat.update")) >= 4
    assert "Promoted" in message.text and "churn-00002" in message.text
    versions = [h["blocks"] for h in message.history] + [message.blocks]
    shown = [all_text(b) for b in versions]
    assert any("canary at 10%" in s for s in shown)
    assert any("Waiting for approval" in s for s in shown)
    assert "Last verdict" in shown[-1] and "8/2000" in shown[-1]   # the numbers
    events = [e.kind for s in rollout.snapshots for e in s.events]
    replies = sim.replies(message.ts)
    assert len(replies) == len(events)              # the default policy selects every event
    assert "Approved" in replies[events.index("approved")].text
    assert metric(registry, "rollwise_notifications_total", outcome="sent") == len(sim.calls)
    notifier.close()


def test_a_burst_of_snapshots_coalesces_and_keeps_every_reply_in_order(
        sim: SlackSim) -> None:
    spec = policy()
    rollout = Rollout(spec).to_approval()
    rollout.approve()
    rollout.promote()
    notifier = notifier_for(sim, spec)
    for snapshot in rollout.snapshots:              # faster than Slack can be called
        notifier.notify(snapshot)
    assert notifier.wait_idle(10)

    message = only_message(sim)
    assert "Promoted" in message.text               # the latest snapshot won
    assert len(sim.calls_to("chat.update")) < len(rollout.snapshots) - 1
    expected = [e.reason for s in rollout.snapshots for e in s.events]
    assert [r.text.split("*")[1] for r in sim.replies(message.ts)] == expected
    notifier.close()


def test_thread_replies_only_for_the_events_the_policy_selects(sim: SlackSim) -> None:
    spec = policy(["approvalRequested", "promoted"])
    rollout = Rollout(spec).to_approval()
    rollout.approve()
    rollout.promote()
    notifier = notifier_for(sim, spec)
    deliver(notifier, rollout)

    message = only_message(sim)
    replies = [m.text for m in sim.replies(message.ts)]
    assert len(replies) == 2
    assert replies[0].startswith(":raising_hand: *Paused*")       # approvalRequested
    assert replies[1].startswith(":tada: *Promoted*")
    assert message.updates >= 4                     # the message itself follows every change
    notifier.close()


def test_rolled_back_message_gives_the_reason_and_the_numbers(sim: SlackSim) -> None:
    spec = policy()
    rollout = Rollout(spec).to_approval()
    rollout.fail()
    notifier = notifier_for(sim, spec)
    deliver(notifier, rollout)

    message = only_message(sim)
    text = all_text(message.blocks)
    assert message.text.startswith(f"{NAMESPACE}/{NAME}: Rolled back: analysis failed at step 2")
    assert "42/2000" in text and "8/2000" in text
    assert not actions_blocks(message.blocks)
    assert sim.replies(message.ts)[-1].text.startswith(":rewind: *RolledBack*")
    notifier.close()


def test_aborted_message_says_who_aborted(sim: SlackSim) -> None:
    spec = policy()
    rollout = Rollout(spec).to_approval()
    rollout.abort(by=f"{APPROVER} (alice)")
    notifier = notifier_for(sim, spec)
    deliver(notifier, rollout)

    message = only_message(sim)
    assert message.text.startswith(f"{NAMESPACE}/{NAME}: Aborted: aborted by {APPROVER} "
                                   "(alice) via slack")
    assert not actions_blocks(message.blocks)
    assert f"aborted by {APPROVER} (alice) via slack" in all_text(message.blocks)
    notifier.close()


def test_approval_buttons_appear_while_waiting_and_give_way_to_who_decided(
        sim: SlackSim) -> None:
    spec = policy()
    rollout = Rollout(spec).to_approval()
    notifier = notifier_for(sim, spec)
    deliver(notifier, rollout)

    waiting = only_message(sim)
    [actions] = actions_blocks(waiting.blocks)
    approve, roll_back = actions["elements"]
    assert (approve["action_id"], approve["style"]) == (ACTION_APPROVE, "primary")
    assert (roll_back["action_id"], roll_back["style"]) == (ACTION_ROLLBACK, "danger")
    for button in (approve, roll_back):
        assert {"title", "text", "confirm", "deny"} <= button["confirm"].keys()
        assert json.loads(button["value"]) == {"namespace": NAMESPACE, "name": NAME,
                                               "rollout": rollout.current.id, "step": 1}
        assert ApprovalTarget.from_json(button["value"]).step == 1
    assert "gets 50% of the traffic" in all_text(waiting.blocks)

    before = len(rollout.snapshots)
    rollout.approve()
    for snapshot in rollout.snapshots[before:]:
        notifier.notify(snapshot)
    assert notifier.wait_idle(10)
    decided = only_message(sim)
    assert not actions_blocks(decided.blocks)
    assert f"approved by {APPROVER} (alice) via slack at <!date^" in all_text(decided.blocks)
    notifier.close()


def test_a_rollout_superseded_mid_way_loses_its_buttons_and_says_so(sim: SlackSim) -> None:
    spec = policy()
    rollout = Rollout(spec).to_approval()
    notifier = notifier_for(sim, spec)
    deliver(notifier, rollout)
    old_id = rollout.current.id
    before = len(rollout.snapshots)
    rollout.tick(observed(25, spec="h3", created="churn-00002"), minutes=1)   # a newer model
    assert rollout.current.id != old_id
    for snapshot in rollout.snapshots[before:]:
        notifier.notify(snapshot)
    assert notifier.wait_idle(10)

    old, new = sim.top_level()
    assert old.text.startswith(f"{NAMESPACE}/{NAME}: Superseded: superseded by rollout "
                               f"{rollout.current.id}")
    assert not actions_blocks(old.blocks)
    assert "h3" in new.text or "h3" in all_text(new.blocks)
    notifier.close()


def test_no_buttons_when_the_policy_names_no_slack_approvers(sim: SlackSim) -> None:
    spec = policy(approvers=False)
    rollout = Rollout(spec).to_approval()
    rendered = render(rollout.snapshots[-1], spec)
    assert not actions_blocks(rendered.blocks)
    assert f"rollwise approve {NAMESPACE}/{NAME}" in all_text(rendered.blocks)


def test_channel_is_the_policys_else_the_namespace_default_else_none(sim: SlackSim) -> None:
    spec = policy(channel=None)
    rollout = Rollout(spec).to_approval()
    quiet = notifier_for(sim, spec)
    deliver(quiet, rollout)
    assert sim.calls == []                          # no channel anywhere: no notification
    quiet.close()

    fallback = notifier_for(sim, spec, default_channels={NAMESPACE: "#models-team"})
    deliver(fallback, rollout)
    assert only_message(sim).channel == sim.channel_id("#models-team")
    fallback.close()


def test_adopting_a_serving_model_posts_nothing(sim: SlackSim) -> None:
    spec = policy()
    rollout = Rollout(spec)
    rollout.tick(observed(None, spec="h1", created="churn-00001", ready="churn-00001"))
    assert rollout.snapshots and rollout.current.last_decision is not None
    notifier = notifier_for(sim, spec)
    deliver(notifier, rollout)
    assert sim.calls == []
    notifier.close()


# --- surviving a restart --------------------------------------------------------------------


def test_a_restarted_controller_keeps_updating_the_same_message(sim: SlackSim) -> None:
    spec = policy()
    rollout = Rollout(spec).to_approval()
    isvcs = FakeObjects(isvc(rollout.current), commands_webhook=TEST_SEALER)
    first = notifier_for(sim, spec, refs=AnnotationMessageRefs(isvcs, TEST_SEALER))
    first.notify(rollout.snapshots[0])
    assert first.wait_idle(10)
    first.close()
    [(namespace, name, patch)] = isvcs.patches
    assert (namespace, name) == (NAMESPACE, NAME)
    assert patch == {"metadata": {"annotations": {SLACK_MESSAGE_ANNOTATION: patch["metadata"]
                                                  ["annotations"][SLACK_MESSAGE_ANNOTATION]}}}
    message = only_message(sim)
    stored = TEST_SEALER.open(SEAL_SLACK_MESSAGE, "uid-1", patch["metadata"]["annotations"][
        SLACK_MESSAGE_ANNOTATION], what="ref")
    assert stored == {"rollout": rollout.current.id, "channel": message.channel,
                      "ts": message.ts}

    # A new process:
    second = notifier_for(sim, spec, refs=AnnotationMessageRefs(isvcs, TEST_SEALER))
    for snapshot in rollout.snapshots[1:]:
        second.notify(snapshot)
    assert second.wait_idle(10)
    assert only_message(sim).ts == message.ts
    assert message.updates >= 1 and "Waiting for approval" in message.text
    assert len(isvcs.patches) == 1                  # the ref is written once
    second.close()


def test_a_ref_of_an_earlier_rollout_is_not_reused() -> None:
    spec = policy()
    rollout = Rollout(spec).to_approval()
    old = TEST_SEALER.seal_text(SEAL_SLACK_MESSAGE, "uid-1",
                                {"rollout": "older-1", "channel": "C1", "ts": "1.1"})
    refs = AnnotationMessageRefs(FakeObjects(
        isvc(rollout.current, extra={SLACK_MESSAGE_ANNOTATION: old})), TEST_SEALER)
    assert refs.get(rollout.snapshots[-1]) is None
    refs.put(rollout.snapshots[-1], MessageRef("C2", "2.2"))
    assert refs.get(rollout.snapshots[-1]) == MessageRef("C2", "2.2")


def test_a_deleted_message_is_posted_again(sim: SlackSim) -> None:
    spec = policy()
    rollout = Rollout(spec).to_approval()
    notifier = notifier_for(sim, spec)
    notifier.notify(rollout.snapshots[0])
    assert notifier.wait_idle(10)
    sim.messages.clear()                             # someone deleted it
    notifier.notify(rollout.snapshots[1])
    assert notifier.wait_idle(10)
    assert len(sim.top_level()) == 1
    assert [c.error for c in sim.calls_to("chat.update")] == ["message_not_found"]
    notifier.close()


# --- rate limits and outages ----------------------------------------------------------------


def test_429_retry_after_is_honoured_by_slack_sdk_in_the_call(sim: SlackSim) -> None:
    spec = policy()
    rollout = Rollout(spec).to_approval()
    registry = CollectorRegistry()
    notifier = notifier_for(sim, spec, registry=registry)
    sim.rate_limit("chat.postMessage", times=1, retry_after=1)
    notifier.notify(rollout.snapshots[0])
    assert notifier.wait_idle(10)

    limited, posted = sim.calls_to("chat.postMessage")[:2]
    assert (limited.status, posted.status) == (429, 200)
    assert posted.at - limited.at >= 1.0
    assert metric(registry, "rollwise_slack_rate_limited_total") == 1
    assert metric(registry, "rollwise_notifications_total", outcome="failed") == 0
    assert len(sim.top_level()) == 1
    notifier.close()


def test_a_long_retry_after_is_waited_out_by_the_queue_not_by_the_caller(
        sim: SlackSim) -> None:
    spec = policy()
    rollout = Rollout(spec).to_approval()
    registry = CollectorRegistry()
    delivery = replace(FAST, inline_rate_limit_wait=0.1)
    notifier = notifier_for(sim, spec, registry=registry, delivery=delivery)
    sim.rate_limit("chat.postMessage", times=1, retry_after=1)
    started = time.monotonic()
    notifier.notify(rollout.snapshots[0])
    assert time.monotonic() - started < 0.01
    assert notifier.wait_idle(10)

    limited, posted = sim.calls_to("chat.postMessage")[:2]
    assert limited.status == 429 and posted.at - limited.at >= 1.0
    assert metric(registry, "rollwise_slack_rate_limited_total") == 1
    assert metric(registry, "rollwise_notifications_total", outcome="failed") == 1
    assert metric(registry, "rollwise_notifications_total", outcome="dropped") == 0
    notifier.close()


def timed_notifies(notifier: SlackNotifier, rollout: Rollout, rounds: int = 10) -> list[float]:
    took = []
    for _ in range(rounds):
        for snapshot in rollout.snapshots:
            started = time.perf_counter()
            notifier.notify(snapshot)
            took.append(time.perf_counter() - started)
    return took


def test_slack_unreachable_never_blocks_notify_and_shows_in_metrics(sim: SlackSim) -> None:
    spec = policy()
    rollout = Rollout(spec).to_approval()
    registry = CollectorRegistry()
    sim.unreachable = True                          # connections are dropped unanswered
    notifier = notifier_for(sim, spec, registry=registry)
    took = timed_notifies(notifier, rollout)
    assert max(took) < 0.01, f"notify() took {max(took) * 1000:.1f} ms"
    assert metric(registry, "rollwise_notification_queue") > 0
    assert notifier.wait_idle(15)                   # given up after max_attempts
    assert metric(registry, "rollwise_notifications_total", outcome="failed") >= 3
    assert metric(registry, "rollwise_notifications_total", outcome="dropped") >= 1
    assert metric(registry, "rollwise_notification_queue") == 0
    assert sim.messages == {}
    notifier.close()


def test_server_errors_are_retried_with_backoff_and_then_delivered(sim: SlackSim) -> None:
    spec = policy()
    rollout = Rollout(spec).to_approval()
    registry = CollectorRegistry()
    delivery = replace(FAST, backoff_base=0.2, max_attempts=10)
    notifier = notifier_for(sim, spec, registry=registry, delivery=delivery)
    sim.fail(503)
    notifier.notify(rollout.snapshots[-1])
    time.sleep(2.5)             # longer than slack_sdk's own in-call retry of a 503
    sim.fail(None)
    assert notifier.wait_idle(10)
    assert len(sim.top_level()) == 1
    statuses = [c.status for c in sim.calls_to("chat.postMessage")]
    assert statuses[-1] == 200 and statuses.count(503) >= 2
    assert metric(registry, "rollwise_notifications_total", outcome="failed") >= 1
    assert metric(registry, "rollwise_notifications_total", outcome="dropped") == 0
    notifier.close()


def test_a_revoked_token_is_reported_once_and_not_retried(sim: SlackSim) -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    spec = policy()
    rollout = Rollout(spec).to_approval()
    registry = CollectorRegistry()
    sim.revoke_token()
    notifier = notifier_for(sim, spec, registry=registry)
    took = timed_notifies(notifier, rollout, rounds=1)
    assert notifier.wait_idle(10)
    took += timed_notifies(notifier, rollout, rounds=3)   # while paused: dropped at once
    assert max(took) < 0.01
    assert len(sim.calls) == 1                      # one call, no retries
    assert metric(registry, "rollwise_notifications_total", outcome="failed") == 1
    assert metric(registry, "rollwise_notifications_total", outcome="dropped") >= len(took)
    logged = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["error"] for r in logged if r["event"].startswith("slack rejected")] == [
        "token_revoked"]
    assert BOT_TOKEN not in out.getvalue()
    notifier.close()


def test_from_settings_builds_a_notifier_only_with_a_bot_token(sim: SlackSim) -> None:
    assert SlackNotifier.from_settings(SlackSettings(), lambda _: None,
                                       CollectorRegistry()) is None
    settings = SlackSettings(bot_token=SecretStr(BOT_TOKEN), api_url=sim.api_url,
                             default_channels={NAMESPACE: "#models-team"})
    notifier = SlackNotifier.from_settings(settings, lambda _: None, CollectorRegistry(),
                                           delivery=FAST)
    assert notifier is not None
    rollout = Rollout(policy(channel=None)).to_approval()
    deliver(notifier, rollout)
    assert only_message(sim).channel == sim.channel_id("#models-team")
    notifier.close()
