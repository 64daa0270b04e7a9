"""TotemConfig: corosync's defaults and derived timers, flat keys, and refusal of nonsense."""

from __future__ import annotations

import pytest

from pycorosync.engine.totem.api import RingId
from pycorosync.engine.totem.config import TotemConfig
from pycorosync.engine.totem.core import TotemCore
from pycorosync.engine.totem.loopback import LoopbackNet
from pycorosync.engine.totem.wire import RTR_MAX, Token, encode_token


@pytest.mark.parametrize(("nodes", "token", "retransmit", "hold", "consensus"), [
    (2, 3000, 714, 561, 3600), (3, 3650, 869, 685, 4380), (4, 4300, 1023, 808, 5160), (5, 4950, 1178, 932, 5940)])
def test_derived_timers_match_corosync(nodes: int, token: int, retransmit: int, hold: int, consensus: int) -> None:
    cfg = TotemConfig.defaults_for(node_count=nodes)
    assert (cfg.token, cfg.token_retransmit, cfg.hold, cfg.consensus) == (token, retransmit, hold, consensus)


def test_defaults_have_corosync_values() -> None:
    cfg = TotemConfig()
    assert (cfg.join, cfg.merge, cfg.window_size, cfg.max_messages, cfg.netmtu) == (50, 200, 50, 17, 1500)
    assert (cfg.fail_recv_const, cfg.seqno_unchanged_const, cfg.miss_count_const) == (2500, 30, 5)
    assert cfg.send_queue_limit_frames == 4 * 1024 * 1024 // 1500
    assert cfg.max_message_bytes == 16 * 1024 * 1024


def test_from_keys_prefers_runtime_values_and_derives_missing_timers() -> None:
    cfg = TotemConfig.from_keys({"totem.token": 1000, "runtime.config.totem.token": 1650, "totem.window_size": "40",
                                 "totem.cancel_token_hold_on_retransmit": "yes", "totem.unrelated": 5})
    assert cfg.token == 1650 and cfg.window_size == 40 and cfg.cancel_token_hold_on_retransmit
    assert cfg.token_retransmit == int(1650 / 4.2) and cfg.consensus == int(1.2 * 1650)


def test_bad_values_are_refused_with_the_key_name() -> None:
    with pytest.raises(ValueError, match=r"totem\.token"):
        TotemConfig.from_keys({"totem.token": "3s"})
    with pytest.raises(ValueError, match=r"totem\.window_size"):
        TotemConfig(window_size=0)
    with pytest.raises(ValueError, match="netmtu"):
        TotemConfig(netmtu=200)


def test_the_smallest_frame_holds_a_token_with_a_full_retransmit_list() -> None:
    full = Token(1, 0, RingId(1, 4), seq=99, aru=9, rtr_list=list(range(10, 10 + RTR_MAX)))
    need = len(encode_token(full, 1, 0))
    assert TotemConfig(netmtu=need + 60, transport_overhead_bytes=60).frame_payload_bytes == need
    with pytest.raises(ValueError, match=f"leaves {need - 1} bytes per frame: at least {need} are needed"):
        TotemConfig(netmtu=need + 59, transport_overhead_bytes=60)


def test_same_seed_and_calls_give_the_same_actions() -> None:
    def run() -> list[object]:
        cfg = TotemConfig.defaults_for(token=200, node_count=3, token_coefficient=0)
        net = LoopbackNet(cfg, [1, 2, 3])
        net.run_until(net.operational, 5 * 10**9)
        for i in range(20):
            net.submit(1 + i % 3, b"d%d" % i)
        net.run_for(10**9)
        return [*net.configs[2], *net.delivered[2], net.frames_sent, net.cores[3].stats]
    assert run() == run()


def test_a_left_node_arms_no_timer_after_its_leave_resends_and_refuses_submits() -> None:
    cfg = TotemConfig.defaults_for(token=200, node_count=2, token_coefficient=0)
    net = LoopbackNet(cfg, [1, 2])
    net.run_until(net.operational, 5 * 10**9)
    core = net.cores[1]
    net.apply(1, core.leave(net.now_ns))
    net.run_for(10**9)
    assert core.state == "LEFT" and core.next_deadline_ns() is None
    with pytest.raises(Exception, match="left"):
        core.submit(net.now_ns, b"x", 2)
    assert TotemCore(cfg, 3, [1, 2, 3]).next_deadline_ns() is None  # nothing before start()


def test_seqno_unchanged_ms_defaults_to_2_and_0_restores_corosyncs_count_only_hold() -> None:
    from pycorosync.engine.config import parse

    assert TotemConfig().seqno_unchanged_ms == 2
    text = ("totem {\n    version: 2\n    cluster_name: t\n    transport: udpu\n    seqno_unchanged_ms: 0\n}\n"
            "nodelist {\n    node {\n        nodeid: 1\n        ring0_addr: 10.0.0.1\n    }\n}\n")
    keys = parse(text).keys
    assert TotemConfig.from_keys({k: v[1] for k, v in keys.items()}).seqno_unchanged_ms == 0
    with pytest.raises(ValueError, match=r"seqno_unchanged_ms"):
        TotemConfig.from_keys({"totem.seqno_unchanged_ms": "soon"})
