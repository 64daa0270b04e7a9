"""Token flow control (COROSYNC.md §2.5): how many frames the token holder may send on this visit."""

from __future__ import annotations


def frames_allowed(window_size: int, max_messages: int, token_fcc: int, token_backlog: int,
                   my_backlog_now: int, my_backlog_prev: int, my_sent_prev: int = 0) -> int:
    """Corosync's formula: a per-visit cap, the window left this rotation, and a backlog-fair share.

    Deliberate differences (COROSYNC.md §12, "one token serializes all senders"):

    - when no other node has a backlog, the ``max_messages`` per-visit cap is lifted and a lone sender
      may use the whole free window;
    - the free window leaves out what I sent on my previous visit (``my_sent_prev``): those frames are
      in ``token_fcc`` but belong to the rotation that ends now. Corosync's order (fcc read before my
      share is taken off) makes a sender allowed the whole window alternate between a full visit and an
      empty one; with its small ``max_messages`` cap that never showed.

    The ring-wide ``window_size`` per rotation still bounds what receivers get.
    """
    free_window = window_size - max(0, token_fcc - my_sent_prev)
    others = token_backlog - my_backlog_prev
    allowed = free_window if others <= 0 else min(max_messages, free_window)
    total = token_backlog + my_backlog_now - my_backlog_prev
    if total > 0:
        share = window_size * my_backlog_now // total
        if share > 0:
            allowed = min(allowed, share)
    return max(0, allowed)
