"""SAM's pure parts: the child->supervisor command stream, policy values, limits and the sam run option parsers."""

from __future__ import annotations

import signal

import pytest
from hypothesis import given, settings, strategies as st

from pycorosync.engine.supervisor.node import ChildSample
from pycorosync.engine.supervisor.policy import GiveUp, Restart, RestartBudget, RestartPolicy
from pycorosync.engine.supervisor.process import ExitStatus
from pycorosync.ipc.errors import CS_ERR_TOO_BIG, CS_OK, CsError
from pycorosync.services.sam import protocol as sp
from pycorosync.services.sam.cli import parse_bytes, parse_signal
from pycorosync.services.sam.resources import ResourceLimits
from pycorosync.services.sam.settings import SamSettings, exit_code_of

COMMANDS = [
    sp.encode(sp.Command.START),
    sp.encode(sp.Command.HB),
    sp.encode(sp.Command.DATA_STORE, b"state \x00\xff" * 100),
    sp.encode(sp.Command.WARN_SIGNAL_SET, signum=signal.SIGUSR1),
    sp.encode(sp.Command.DATA_STORE, b""),
    sp.encode(sp.Command.STOP),
    sp.encode(sp.Command.MARK_FAILED),
]


def test_commands_split_at_every_byte_boundary_come_out_whole_and_in_order() -> None:
    stream = b"".join(COMMANDS)
    whole = sp.CommandReader().feed(stream)
    for cut in range(len(stream) + 1):
        reader = sp.CommandReader()
        assert reader.feed(stream[:cut]) + reader.feed(stream[cut:]) == whole
    assert [r.command for r in whole] == [sp.Command.START, sp.Command.HB, sp.Command.DATA_STORE,
                                         sp.Command.WARN_SIGNAL_SET, sp.Command.DATA_STORE, sp.Command.STOP,
                                         sp.Command.MARK_FAILED]
    assert whole[2].data == b"state \x00\xff" * 100 and whole[3].signum == signal.SIGUSR1 and whole[4].data == b""


def test_a_blob_over_the_limit_is_refused_and_skipped_without_losing_step() -> None:
    reader = sp.CommandReader(max_data_bytes=10)
    out = reader.feed(sp.encode(sp.Command.DATA_STORE, b"x" * 11)[:12])
    out += reader.feed(b"x" * 8 + sp.encode(sp.Command.HB))
    assert [(r.command, r.too_big) for r in out] == [(sp.Command.DATA_STORE, True), (sp.Command.HB, False)]


def test_bytes_that_are_no_command_are_counted_and_dropped() -> None:
    reader = sp.CommandReader()
    out = reader.feed(b"\x07\xff" + sp.encode(sp.Command.HB) + b"\x99")
    assert [r.command for r in out] == [sp.Command.HB]
    assert reader.malformed == 3


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
def test_any_byte_stream_in_any_split_never_raises(stream: bytes, step: int) -> None:
    reader = sp.CommandReader(max_data_bytes=64)
    for i in range(0, len(stream), step):
        for received in reader.feed(stream[i : i + step]):
            assert len(received.data) <= 64


def test_replies_carry_corosync_error_codes() -> None:
    assert sp.decode_reply(sp.encode_reply(CS_OK)) == CS_OK
    assert sp.decode_reply(sp.encode_reply(CS_ERR_TOO_BIG)) == CS_ERR_TOO_BIG
    assert sp.decode_reply(b"\x05") == 2  # garbled: CS_ERR_LIBRARY


def test_recovery_policy_values_are_corosyncs_and_flags_combine_only_with_quit_or_restart() -> None:
    assert (sp.SAM_RECOVERY_POLICY_QUIT, sp.SAM_RECOVERY_POLICY_RESTART, sp.SAM_RECOVERY_POLICY_QUORUM,
            sp.SAM_RECOVERY_POLICY_QUORUM_QUIT, sp.SAM_RECOVERY_POLICY_QUORUM_RESTART,
            sp.SAM_RECOVERY_POLICY_CMAP) == (1, 2, 8, 9, 10, 0x10)
    for ok in (1, 2, 9, 10, 0x11, 0x12, 0x19, 0x1A):
        assert sp.valid_policy(ok), ok
    for bad in (0, 3, 8, 0x10, 0x18, 0x21, 0x102):
        assert not sp.valid_policy(bad), bad
    assert sp.policy_name(0x1A) == "restart" and sp.policy_name(0x19) == "quit"
    with pytest.raises(CsError) as err:
        SamSettings(recovery_policy=3)
    assert err.value.name == "CS_ERR_INVALID_PARAM"


def test_restart_limit_text_gives_a_policy_and_its_sixth_restart_gives_up() -> None:
    policy = RestartPolicy.parse_limit("5/60", backoff_initial_s=0.0, backoff_max_s=0.0)
    assert (policy.max_restarts, policy.window_s) == (5, 60.0)
    budget = RestartBudget(policy)
    decisions = [budget.on_failure(float(t)) for t in range(6)]
    assert all(isinstance(d, Restart) and d.delay_s == 0.0 for d in decisions[:5])
    assert isinstance(decisions[5], GiveUp)
    assert decisions[5].message("app", "SAM child") == (
        "SAM child 'app' failed 6 times within 60 s (restart storm); giving up on it")


@pytest.mark.parametrize("text", ["5", "x/60", "5/0", "-1/60", "5/", "/60", "5/abc"])
def test_a_malformed_restart_limit_is_refused_with_the_text_quoted(text: str) -> None:
    with pytest.raises(ValueError, match="N/SECONDS"):
        RestartPolicy.parse_limit(text)


def test_option_parsers_read_sizes_and_signals() -> None:
    assert parse_bytes("512M") == 512 << 20 and parse_bytes("1g") == 1 << 30 and parse_bytes("4096") == 4096
    assert parse_bytes("1.5KiB") == 1536
    assert parse_signal("TERM") == signal.SIGTERM and parse_signal("SIGUSR1") == signal.SIGUSR1
    assert parse_signal("9") == 9
    for bad in ("lots", "-5M", "0"):
        with pytest.raises(ValueError, match="--max-rss"):
            parse_bytes(bad)
    with pytest.raises(ValueError, match="--warn-signal"):
        parse_signal("SIGNOPE")


def test_a_sample_over_a_resource_limit_says_which_limit() -> None:
    sample = ChildSample("app", 1, cpu_percent=95.0, rss_bytes=300 << 20, num_threads=3, sampled_s=0.0)
    assert ResourceLimits().violation(sample) is None
    assert "rss 314572800 bytes over the limit of 104857600" in str(ResourceLimits(max_rss_bytes=100 << 20)
                                                                     .violation(sample))
    assert "cpu 95.0 % over the limit of 50 %" in str(ResourceLimits(max_cpu_percent=50).violation(sample))
    with pytest.raises(ValueError):
        ResourceLimits(max_rss_bytes=0)


def test_exit_status_of_a_killed_child_follows_the_shell() -> None:
    assert exit_code_of(ExitStatus(1, 7)) == 7
    assert exit_code_of(ExitStatus(1, -9)) == 137


def test_the_sam_library_imports_neither_numpy_nor_numba() -> None:
    # a supervisor that forks a small process restarts its child in milliseconds; numba's heap would cost more
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "import sys, pycorosync.sam, pycorosync.services.sam.cli; "
         "print(sorted(m for m in ('numpy', 'numba') if m in sys.modules))"],
        capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
