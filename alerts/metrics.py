"""The alert service's metrics, in one place."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

NOTIFICATIONS = Counter(
    "carescore_alert_notifications",
    "Alert notifications by channel and outcome.",
    ["channel", "outcome"],
)

NOTICE_ERRORS = Counter(
    "carescore_alert_notice_errors",
    "Notices whose rendering or sending raised (not a refusal by the receiver), by channel.",
    ["channel"],
)

TRANSITIONS = Counter("carescore_alert_transitions", "Alert transitions by kind.", ["kind"])

STORE_ERRORS = Counter(
    "carescore_alert_store_errors",
    "Alert store reads and writes that failed (the change is kept and retried), by operation.",
    ["operation"],
)

UNSTORED = Gauge(
    "carescore_alert_changes_unstored",
    "Alert changes held in memory because the alert store has not taken them yet.",
)

LEADER = Gauge(
    "carescore_alert_leader",
    "1 while this process evaluates alerts and delivers notices (the leader among gateways "
    "sharing the alert store), 0 while another does.",
)
