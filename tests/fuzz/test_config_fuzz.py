"""Whatever text corosync.conf holds, the parser either accepts it or raises ConfigError: never anything else."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

from hypothesis import HealthCheck, given, settings, strategies as st

from pycorosync.engine.config import ConfigError, CorosyncConfig, format_entry, parse

CONF = Path(__file__).resolve().parents[1] / "data" / "conf"
VALID = [p.read_text() for p in sorted(CONF.glob("*.conf"))]

SECTIONS = ["totem", "nodelist", "node", "interface", "quorum", "device", "heuristics", "net", "logging",
            "logger_subsys", "system", "resources", "uidgid", "nozzle", "monitoring", "member"]  # fmt: skip
KEYS = ["version", "token", "transport", "cluster_name", "nodeid", "ring0_addr", "ring1_addr", "name", "linknumber",
        "mcastaddr", "mcastport", "ttl", "bindnetaddr", "knet_link_priority", "provider", "two_node", "wait_for_all",
        "expected_votes", "quorum_votes", "model", "votes", "subsys", "debug", "uid", "gid", "crypto_cipher",
        "crypto_hash", "secauth", "key", "join", "consensus", "hold", "token_coefficient", "link_mode", "ip_version",
        "broadcast", "ip_dscp", "auto_tie_breaker", "last_man_standing", "prometheus", "run_dir", "netmtu"]  # fmt: skip
VALUES = ["2", "0", "1", "-1", "3000", "4294967296", "udpu", "udp", "knet", "iba", "10.0.0.1", "fd00::1",
          "239.192.0.1", "localhost", "yes", "no", "on", "off", "aes256", "sha256", "none", "corosync_votequorum",
          "TOTEM", "root", "x" * 40, "", "{", "}", ":", "#", "\xa0", "\udcff", "\0", "passive", "ipv6", "cs3",
          "127.0.0.1:9405", "lowest", "65536"]  # fmt: skip

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@contextmanager
def _no_resolver() -> Iterator[None]:
    """Host names in fuzzed files must not wait on DNS: resolution fails at once, as offline."""
    with mock.patch.object(socket, "getaddrinfo", side_effect=socket.gaierror("offline")):
        yield


def _check(text: str) -> None:
    with _no_resolver():
        try:
            config = parse(text)
        except ConfigError as exc:
            assert str(exc).startswith("corosync.conf")
            return
    _exercise(config)


def _exercise(config: CorosyncConfig) -> None:
    for key, (vtype, value) in config.all_keys().items():
        format_entry(key, vtype, value, show_binary=True)
    assert config.totem.token_ms >= 30
    assert config.totem.consensus_ms >= config.totem.join_ms
    assert len({node.nodeid for node in config.nodes}) == len(config.nodes)
    for node in config.nodes:
        config.all_keys(node)


@st.composite
def _structured(draw: st.DrawFn) -> str:
    lines: list[str] = []
    depth = 0
    for _ in range(draw(st.integers(0, 40))):
        choice = draw(st.integers(0, 9))
        if choice < 2:
            lines.append(f"{draw(st.sampled_from(SECTIONS))} {{")
            depth += 1
        elif choice < 4 and depth:
            lines.append("}")
            depth -= 1
        else:
            lines.append(f"{draw(st.sampled_from(KEYS))}: {draw(st.sampled_from(VALUES))}")
    lines += ["}"] * draw(st.integers(0, depth))
    return "\n".join("    " * draw(st.integers(0, 2)) + line for line in lines)


@st.composite
def _mutated(draw: st.DrawFn) -> str:
    lines = draw(st.sampled_from(VALID)).split("\n")
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            break
        index = draw(st.integers(0, len(lines) - 1))
        action = draw(st.integers(0, 4))
        if action == 0:
            del lines[index]
        elif action == 1:
            lines.insert(index, lines[index])
        elif action == 2 and ":" in lines[index]:
            key = lines[index].split(":", 1)[0]
            lines[index] = f"{key}: {draw(st.sampled_from(VALUES) | st.text(max_size=20))}"
        elif action == 3:
            lines.insert(index, draw(st.text(max_size=60)))
        else:
            position = draw(st.integers(0, len(lines[index])))
            lines[index] = lines[index][:position] + draw(st.text(max_size=5)) + lines[index][position:]
    return "\n".join(lines)


@FUZZ
@given(st.text(max_size=400))
def test_random_text_is_accepted_or_refused_with_config_error(text: str) -> None:
    _check(text)


@FUZZ
@given(_structured())
def test_random_sections_and_keys_are_accepted_or_refused_with_config_error(text: str) -> None:
    _check(text)


@FUZZ
@given(_mutated())
def test_mutated_real_configs_are_accepted_or_refused_with_config_error(text: str) -> None:
    _check(text)


def test_every_example_config_parses() -> None:
    for text in VALID:
        _check(text)
        with _no_resolver():
            parse(text)
