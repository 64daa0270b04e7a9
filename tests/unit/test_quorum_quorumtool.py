"""``pycorosync quorumtool`` without a node: corosync-quorumtool's messages and exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycorosync.cli import main as cli_main


def run(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> tuple[int, str, str]:
    code = cli_main(["--run-dir", str(tmp_path), "quorumtool", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("args", [["-s"], ["-l"], [], ["-e", "3"], ["-v", "1"]])
def test_without_a_running_node_says_cannot_initialize_cmap_and_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str]
) -> None:
    code, out, err = run(capsys, tmp_path, *args)
    assert (code, out, err) == (1, "", "Cannot initialize CMAP service\n")


def test_a_nodeid_that_is_not_a_number_is_refused_before_connecting(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, tmp_path, "-v", "1", "-n", "abc")
    assert code == 1 and err == "The nodeid was not valid, try a positive number\n"


def test_order_must_be_address_name_or_id(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        run(capsys, tmp_path, "-o", "x")
    assert exc.value.code == 2


class FakeCmap:
    """The cmap calls quorumtool makes, over a dict."""

    def __init__(self, keys: dict[str, object]) -> None:
        self.keys = keys

    def get(self, key: str) -> tuple[object, int]:
        from pycorosync.ipc.errors import CsError, CsErrorCode

        if key not in self.keys:
            raise CsError(CsErrorCode.CS_ERR_NOT_EXIST, key)
        return self.keys[key], 0

    def iter(self, prefix: str) -> list[tuple[str, int, object]]:
        return [(k, 0, v) for k, v in sorted(self.keys.items()) if k.startswith(prefix)]


class FakeQuorum:
    def __init__(self, event: object) -> None:
        self.event = event
        self.tracked: list[int] = []

    def trackstart(self, flags: int) -> None:
        self.tracked.append(flags)

    def next_event(self, timeout: float | None = None) -> object:
        return self.event


NODELIST = {
    "nodelist.local_node_pos": 1,
    "nodelist.node.0.nodeid": 1, "nodelist.node.0.ring0_addr": "10.0.0.9", "nodelist.node.0.name": "zeta",
    "nodelist.node.1.nodeid": 2, "nodelist.node.1.ring0_addr": "10.0.0.2", "nodelist.node.1.name": "alpha",
    "nodelist.node.1.ring1_addr": "10.1.0.2",
}


def test_status_without_votequorum_shows_the_ring_sequence_and_no_votes() -> None:
    from pycorosync.services.quorum.client import QuorumEvent, RingId
    from pycorosync.services.quorum.display import format_status
    from pycorosync.services.quorum.quorumtool import gather_status

    quorum = FakeQuorum(QuorumEvent(True, RingId(1, 0x2C), (1, 2)))
    status = gather_status(FakeCmap(NODELIST), quorum, None, None)  # type: ignore[arg-type]
    assert quorum.tracked == [1]  # CS_TRACK_CURRENT: the state now, no tracking left behind
    assert status.our_nodeid == 2 and status.local is None and status.quorate
    assert [m.nodeid for m in status.members] == [2, 1]  # by address: 10.0.0.2 before 10.0.0.9
    text = format_status(status)
    assert "Quorum provider:  Not configured\n" in text and "Ring ID:          2c\n" in text
    assert "Votequorum" not in text


def test_names_addresses_and_all_addresses_of_members() -> None:
    from pycorosync.services.quorum.client import QuorumEvent, RingId
    from pycorosync.services.quorum.quorumtool import gather_status

    quorum = FakeQuorum(QuorumEvent(True, RingId(1, 8), (1, 2)))
    names = [m.name for m in gather_status(FakeCmap(NODELIST), quorum, None, None).members]  # type: ignore[arg-type]
    assert names == ["alpha", "zeta"]
    shown = gather_status(FakeCmap(NODELIST), quorum, None, None, numeric=True,  # type: ignore[arg-type]
                          all_addresses=True).members
    assert [m.name for m in shown] == ["10.0.0.2,10.1.0.2", "10.0.0.9"]
