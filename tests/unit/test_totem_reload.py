"""A config reload hands new timers to a running Totem core: they apply from the next arm, the ring stays."""

from __future__ import annotations

from dataclasses import replace

from pycorosync.engine.totem.config import RELOADABLE_FIELDS, TotemConfig
from pycorosync.engine.totem.loopback import LoopbackNet

MS = 1_000_000
S = 1000 * MS


def config(token: int, **kw: object) -> TotemConfig:
    return TotemConfig.defaults_for(token=token, node_count=3, token_coefficient=0, **kw)


def formed(token: int) -> LoopbackNet:
    net = LoopbackNet(config(token), [1, 2, 3])
    assert net.run_until(net.operational, 5 * S)
    return net


def failure_detection_ns(net: LoopbackNet) -> int:
    """Virtual time from node 3 crashing to nodes 1 and 2 running a new ring without it."""
    net.stop(3)
    t0 = net.now_ns
    assert net.run_until(lambda: net.operational([1, 2]), net.now_ns + 60 * S)
    return net.now_ns - t0


def test_a_token_timeout_raised_by_reload_delays_failure_detection_accordingly() -> None:
    baseline = failure_detection_ns(formed(200))
    net = formed(200)
    for core in net.cores.values():
        core.reconfigure(config(2000))
    net.run_for(1 * S)  # the token keeps turning: every timer is re-armed with the new values
    raised = failure_detection_ns(net)
    assert baseline < (200 + 240 + 500) * MS
    assert raised >= 2000 * MS  # no longer detected after the old 200 ms token timeout
    assert raised < (2000 + 2400 + 500) * MS


def test_a_reload_keeps_the_ring_and_reports_what_changed() -> None:
    net = formed(200)
    ring = net.cores[1].ring_id
    old = net.cores[1].cfg
    changed = net.cores[1].reconfigure(config(1000, window_size=20))
    names = [name for name, _old, _new in changed]
    assert ("token", 200, 1000) in changed and ("window_size", 50, 20) in changed
    assert "hold" in names and "consensus" in names and "token_retransmit" in names
    assert net.cores[1].reconfigure(config(1000, window_size=20)) == []  # same values again: nothing changes
    for n in (2, 3):
        net.cores[n].reconfigure(config(1000, window_size=20))
    net.run_for(3 * S)
    assert net.operational() and all(c.ring_id == ring for c in net.cores.values())
    assert net.cores[1].cfg.netmtu == old.netmtu


def test_frame_and_queue_sizes_are_not_taken_from_a_reload() -> None:
    base = config(200)
    new = replace(config(900), netmtu=9000, send_queue_frames=7, max_message_bytes=1024)
    merged = base.reloaded(new)
    assert merged.token == 900 and merged.netmtu == base.netmtu
    assert merged.send_queue_frames == base.send_queue_frames and merged.max_message_bytes == base.max_message_bytes
    assert {name for name, _o, _n in base.changes(new)} <= set(RELOADABLE_FIELDS)
