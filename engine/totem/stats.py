"""Totem counters, named as corosync's ``stats.srp.*`` keys."""

from __future__ import annotations

#: counters exported as ``stats.srp.<name>`` (corosync's names) plus pycorosync's own at the end
COUNTER_NAMES = (
    "orf_token_tx", "orf_token_rx",
    "memb_merge_detect_tx", "memb_merge_detect_rx",
    "memb_join_tx", "memb_join_rx",
    "mcast_tx", "mcast_rx",
    "memb_commit_token_tx", "memb_commit_token_rx",
    "token_hold_cancel_tx", "token_hold_cancel_rx",
    "mcast_retx",
    "operational_entered", "operational_token_lost",
    "gather_entered", "gather_token_lost",
    "commit_entered", "commit_token_lost",
    "recovery_entered", "recovery_token_lost",
    "consensus_timeouts",
    "rx_msg_dropped",
    "continuous_gather",
    "mtt_rx_token", "avg_token_workload", "avg_backlog_calc",
    # pycorosync additions
    "rx_malformed", "rx_stale_incarnation", "rx_foreign", "rx_duplicate",
    "fragments_dropped", "failed_to_recv", "token_retx", "messages_delivered",
)


def new_stats() -> dict[str, int]:
    """A fresh counter dict with every name at 0."""
    return dict.fromkeys(COUNTER_NAMES, 0)
