"""Token flow control (COROSYNC.md §2.5): how many frames the token holder may send on this visit."""

from __future__ import annotations


def frames_allowed(window_size: int, max_messages: int, token_fcc: int, token_backlog: int,
                   my_backlog_now: int, my_backlog_prev: int) -> int:
    """Corosync's formula: a per-visit cap, the window left this rotation, and a backlog-fair share."""
    allowed = min(max_messages, window_size - token_fcc)
    total = token_backlog + my_backlog_now - my_backlog_prev
    if total > 0:
        share = window_size * my_backlog_now // total
        if share > 0:
            allowed = min(allowed, share)
    return max(0, allowed)
