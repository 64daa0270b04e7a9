"""The EVS checker catches each property broken on purpose in a hand-written history."""

from __future__ import annotations

import pytest

from pycorosync.engine.totem.api import ConfigChange, ConfigType, RingId
from tests.sim.checker import check
from tests.sim.history import R1, R2, good_history

N1, N2, N3 = (1, 0), (2, 0), (3, 0)


def props(h, **kw) -> set[str]:  # type: ignore[no-untyped-def]
    return {v.prop for v in check(h.record(**kw))}


def _events(h, inst, kind):  # type: ignore[no-untyped-def]
    return [i for i, e in enumerate(h.logs[inst].events) if e[1] == kind]


def test_correct_history_has_no_violation() -> None:
    assert check(good_history().record()) == []


def test_correct_history_passes_liveness_when_final_ring_is_complete() -> None:
    assert check(good_history().record(heal=200, deadline=1000)) == []


def test_agreement_detects_two_members_delivering_in_different_orders() -> None:
    h = good_history()
    d = _events(h, N2, "D")
    ev = h.logs[N2].events
    ev[d[0]], ev[d[1]] = (ev[d[0]][0], "D", ev[d[1]][2]), (ev[d[1]][0], "D", ev[d[0]][2])
    assert "agreement" in props(h)


def test_agreement_detects_a_gap_in_regular_delivery() -> None:
    h = good_history()
    d = _events(h, N2, "D")
    del h.logs[N2].events[d[0]]  # node 2 delivers m2, m3 but not m1: not a prefix
    assert "agreement" in props(h)


def test_agreement_allows_a_crashed_member_to_deliver_a_prefix() -> None:
    h = good_history()
    d = _events(h, N3, "D")
    del h.logs[N3].events[d[-1]]  # node 3 crashed before delivering m3
    assert "agreement" not in props(h)


def test_agreement_detects_transitional_deliveries_in_different_orders() -> None:
    h = good_history()
    m5, m6 = h.accept(N1, 700, 2), h.accept(N2, 700, 1)
    for inst, order in ((N1, (m5, m6)), (N2, (m6, m5))):
        h.config(inst, 900, False, RingId(1, 12), (inst[0],), (1, 2))
        for key in order:
            h.deliver(inst, 901, key, R2)
    assert "agreement" in props(h)


def test_virtual_synchrony_detects_different_sets_for_members_moving_together() -> None:
    h = good_history()
    d = _events(h, N2, "D")
    del h.logs[N2].events[d[2]]  # node 2 misses m3 (a prefix, so agreement holds) yet moves with node 1
    assert "virtual_synchrony" in props(h)


def test_virtual_synchrony_detects_different_transitional_sets() -> None:
    h = good_history()
    ev = h.logs[N2].events
    c = _events(h, N2, "C")[2]
    ev[c] = (ev[c][0], "C", ConfigChange(ConfigType.TRANSITIONAL, R2, (2,), (1, 3), ()))
    assert "virtual_synchrony" in props(h)


def test_reliability_detects_a_live_sender_missing_its_own_message() -> None:
    h = good_history()
    h.accept(N2, 700, 1)
    assert "reliability" in props(h)


def test_reliability_detects_a_survivor_missing_a_message_of_its_ring() -> None:
    h = good_history()
    d = _events(h, N2, "D")
    del h.logs[N2].events[d[-1]]  # m4 in the final ring R2, delivered by node 1 only
    assert "reliability" in props(h)


def test_integrity_detects_a_duplicate_delivery() -> None:
    h = good_history()
    h.deliver(N1, 603, (1, 0, 1), R2)
    assert "integrity" in props(h)


def test_integrity_detects_a_corrupted_payload() -> None:
    h = good_history()
    h.deliver(N1, 603, (2, 0, 9), R2, error="payload body checksum mismatch")
    assert "integrity" in props(h)


def test_integrity_detects_a_message_nobody_sent() -> None:
    h = good_history()
    h.deliver(N1, 603, (2, 0, 9), R2)
    assert "integrity" in props(h)


def test_integrity_detects_a_truncated_big_message() -> None:
    h = good_history()
    h.accept(N1, 610, 2, size=3 * 1024 * 1024)
    h.deliver(N1, 620, (1, 0, 2), R2, size=1024 * 1024)
    h.deliver(N2, 620, (1, 0, 2), R2, size=3 * 1024 * 1024)
    assert "integrity" in props(h)


def test_integrity_detects_a_wrong_sender_or_guarantee() -> None:
    h = good_history()
    h.accept(N1, 610, 2)
    h.deliver(N1, 620, (1, 0, 2), R2, sender=2)
    h.deliver(N2, 620, (1, 0, 2), R2, guarantee=3)
    assert "integrity" in props(h)


def test_integrity_detects_messages_of_one_sender_out_of_submit_order() -> None:
    h = good_history()
    for c in (2, 3):
        h.accept(N1, 610, c)
    for inst in (N1, N2):
        h.deliver(inst, 620, (1, 0, 3), R2)
        h.deliver(inst, 621, (1, 0, 2), R2)
    assert "integrity" in props(h)


def test_integrity_detects_delivery_before_any_configuration() -> None:
    h = good_history()
    h.logs[N1].events.insert(1, (1, "D", h.logs[N1].events[_events(h, N1, "D")[0]][2]))
    assert "integrity" in props(h)


def test_safe_detects_safe_delivery_before_every_member_received_it() -> None:
    h = good_history()
    h.logs[N3].received_at[(2, 0, 0)] = 10_000 * 1_000_000  # node 3 got the SAFE m2 only much later
    assert "safe" in props(h)


def test_safe_ignores_agreed_messages_in_the_regular_configuration() -> None:
    h = good_history()
    h.logs[N3].received_at[(1, 0, 0)] = 10_000 * 1_000_000  # m1 is AGREED
    assert "safe" not in props(h)


def test_config_detects_a_regular_configuration_without_transitional() -> None:
    h = good_history()
    del h.logs[N2].events[_events(h, N2, "C")[2]]
    assert "config" in props(h)


def test_config_detects_one_ring_id_with_two_memberships() -> None:
    h = good_history()
    ev = h.logs[N2].events
    c = _events(h, N2, "C")[3]
    ev[c] = (ev[c][0], "C", ConfigChange(ConfigType.REGULAR, R2, (1, 2, 3), (), ()))
    assert "config" in props(h)


def test_config_detects_a_ring_seq_that_does_not_grow_across_restarts() -> None:
    h = good_history()
    n3b = (3, 1)
    h.start(n3b, 700)
    h.config(n3b, 710, False, RingId(3, 4), (3,))
    h.config(n3b, 710, True, RingId(3, 4), (3,))
    assert "config" in props(h)


def test_config_detects_a_member_list_without_the_node_itself() -> None:
    h = good_history()
    ev = h.logs[N2].events
    c = _events(h, N2, "C")[3]
    ev[c] = (ev[c][0], "C", ConfigChange(ConfigType.REGULAR, RingId(1, 12), (1,), (), ()))
    assert "config" in props(h)


def test_config_detects_a_delivery_tagged_with_another_ring() -> None:
    h = good_history()
    h.accept(N1, 610, 2)
    h.deliver(N1, 620, (1, 0, 2), R1)
    h.deliver(N2, 620, (1, 0, 2), R2)
    assert "config" in props(h)


def test_liveness_detects_live_nodes_left_in_separate_rings() -> None:
    h = good_history()
    n3b = (3, 1)
    h.start(n3b, 700)
    h.config(n3b, 710, False, RingId(3, 12), (3,))
    h.config(n3b, 710, True, RingId(3, 12), (3,))
    assert "liveness" in props(h, heal=200, deadline=1000)


def test_liveness_detects_a_final_ring_installed_after_the_deadline() -> None:
    assert "liveness" in props(good_history(), heal=100, deadline=300)


@pytest.mark.parametrize("prop", ["agreement", "virtual_synchrony", "reliability", "integrity", "safe", "config",
                                  "liveness"])
def test_every_property_has_a_detecting_test(prop: str) -> None:
    names = [n for n in globals() if n.startswith(f"test_{prop}_detects")]
    assert names, f"no test proves the checker detects a {prop} violation"
