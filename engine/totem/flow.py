"""Token flow control (COROSYNC.md §2.5): how many frames the token holder may send on this visit."""

from __future__ import annotations


def frames_allowed(window_size: int, max_messages: int, token_fcc: int, token_backlog: int,
                   my_backlog_now: int, my_backlog_prev: int) -> int:
    """Corosync's formula: a per-visit cap, the window left this rotation, and a backlog-fair share.

    One deliberate difference (COROSYNC.md §12, "one token serializes all senders"): when no other
    node has a backlog, the ``max_messages`` per-visit cap is lifted and a lone sender may use the
    whole free window. The ring-wide ``window_size`` per rotation still bounds what receivers get.
    """
    free_window = window_size - token_fcc
    others = token_backlog - my_backlog_prev
    allowed = free_window if others <= 0 else min(max_messages, free_window)
    total = token_backlog + my_backlog_now - my_backlog_prev
    if total > 0:
        share = window_size * my_backlog_now // total
        if share > 0:
            allowed = min(allowed, share)
    return max(0, allowed)
