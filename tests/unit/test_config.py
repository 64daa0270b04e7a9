"""corosync.conf: grammar, typed keys, derived totem values, node ids, local node, and the view other parts read."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycorosync.engine.config import ConfigError, ValueType, load, parse

CONF = Path(__file__).resolve().parents[1] / "data" / "conf"


def _conf(*nodes: str, totem: str = "", transport: str = "udpu", extra: str = "") -> str:
    node_text = "".join(
        f"    node {{\n        nodeid: {i}\n        ring0_addr: {addr}\n    }}\n" for i, addr in enumerate(nodes, 1)
    )
    return (
        f"totem {{\n    version: 2\n    cluster_name: t\n    transport: {transport}\n{totem}}}\n"
        f"nodelist {{\n{node_text}}}\n{extra}"
    )


def _addresses(count: int) -> list[str]:
    return [f"10.0.0.{i}" for i in range(1, count + 1)]


# -- the COROSYNC.md §11.4 example and the §2.13 table ---------------------------------------------------------------


def test_minimal_three_node_example_has_effective_token_3650() -> None:
    config = load(CONF / "demo3_udpu.conf")
    assert config.get("runtime.config.totem.token") == 3650
    assert config.totem.token_ms == 3650
    assert config.totem.token_configured_ms == 3000
    assert "totem.token" not in config.keys  # defaults are runtime values, not file keys
    assert [n.nodeid for n in config.nodes] == [1, 2, 3]
    assert [n.name for n in config.nodes] == ["alpha", "beta", "gamma"]
    assert sum(n.quorum_votes for n in config.nodes) == 3
    assert config.quorum_provider == "corosync_votequorum"
    assert config.totem.transport == "udpu"
    assert config.totem.cluster_name == "demo3"


@pytest.mark.parametrize(
    ("nodes", "token", "retransmit", "hold", "consensus"),
    [(2, 3000, 714, 561, 3600), (3, 3650, 869, 685, 4380), (4, 4300, 1023, 808, 5160), (5, 4950, 1178, 932, 5940)],
)
def test_derived_timers_follow_the_node_count(
    nodes: int, token: int, retransmit: int, hold: int, consensus: int
) -> None:
    totem = parse(_conf(*_addresses(nodes))).totem
    assert (totem.token_ms, totem.token_retransmit_ms, totem.hold_ms, totem.consensus_ms) == (
        token,
        retransmit,
        hold,
        consensus,
    )


def test_defaults_of_the_other_totem_keys() -> None:
    totem = parse(_conf(*_addresses(2))).totem
    assert (totem.join_ms, totem.merge_ms, totem.downcheck_ms, totem.send_join_ms) == (50, 200, 1000, 0)
    assert (totem.fail_recv_const, totem.seqno_unchanged_const, totem.miss_count_const) == (2500, 30, 5)
    assert (totem.window_size, totem.max_messages, totem.netmtu) == (50, 17, 1500)
    assert (totem.token_warning, totem.token_warning_ms) == (75, 2250)
    assert (totem.heartbeat_failures_allowed, totem.heartbeat_timeout_ms, totem.max_network_delay_ms) == (0, 0, 50)
    assert totem.block_unlisted_ips and not totem.cancel_token_hold_on_retransmit and not totem.clear_node_high_bit
    assert (totem.crypto_cipher, totem.crypto_hash, totem.crypto_model, totem.crypto_enabled) == (
        "none",
        "none",
        "nss",
        False,
    )
    assert totem.link_mode == "passive" and totem.ip_version == "ipv6-4"
    assert totem.mcastport == 5405


def test_token_coefficient_zero_keeps_the_configured_token() -> None:
    totem = parse(_conf(*_addresses(5), totem="    token: 1000\n    token_coefficient: 0\n")).totem
    assert totem.token_ms == 1000
    assert totem.consensus_ms == 1200


def test_custom_token_coefficient_scales_the_token() -> None:
    totem = parse(_conf(*_addresses(4), totem="    token: 1000\n    token_coefficient: 100\n")).totem
    assert totem.token_ms == 1200


def test_configured_zero_means_the_default_as_in_corosync() -> None:
    totem = parse(_conf(*_addresses(2), totem="    token: 0\n    window_size: 0\n    token_warning: 0\n")).totem
    assert totem.token_ms == 3000
    assert totem.window_size == 50
    assert totem.token_warning == 0  # zero is "off" for token_warning


def test_explicit_timers_win_over_derived_ones() -> None:
    text = _conf(*_addresses(3), totem="    token_retransmit: 500\n    hold: 300\n    consensus: 9000\n")
    totem = parse(text).totem
    assert (totem.token_ms, totem.token_retransmit_ms, totem.hold_ms, totem.consensus_ms) == (3650, 500, 300, 9000)


def test_heartbeat_timeout_is_off_unless_below_the_token() -> None:
    on = parse(_conf(*_addresses(2), totem="    heartbeat_failures_allowed: 3\n")).totem
    assert on.heartbeat_timeout_ms == 3 * 714 + 50
    off = parse(_conf(*_addresses(2), totem="    heartbeat_failures_allowed: 5\n")).totem
    assert off.heartbeat_timeout_ms == 0  # 5 * 714 + 50 >= 3000


# -- the real corosync dumps --------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["udpu", "knet"])
def test_keys_match_a_real_corosync_cmapctl_dump(flavour: str) -> None:
    config = load(CONF / f"reference_{flavour}.conf")
    local = config.local_node(1)
    from pycorosync.engine.config import format_entry

    ours = [format_entry(k, t, v) for k, (t, v) in config.all_keys(local).items()]
    expected = (CONF / f"reference_{flavour}.expected").read_text().splitlines()
    assert ours == expected


def test_runtime_knet_ping_timers_derive_from_the_effective_token() -> None:
    config = load(CONF / "knet_multilink.conf")
    link0, link1 = config.totem.links
    assert config.totem.token_ms == 4300
    assert (link0.knet_ping_interval_ms, link0.knet_ping_timeout_ms, link0.knet_pong_count) == (1075, 2150, 2)
    assert (link1.knet_ping_interval_ms, link1.knet_ping_timeout_ms, link1.knet_pong_count) == (200, 1000, 3)
    assert config.keys["runtime.config.totem.interface.1.knet_ping_interval"] == (ValueType.UINT32, 200)
    assert (link0.knet_link_priority, link1.knet_link_priority) == (1, 10)
    assert (link0.mcastport, link1.mcastport) == (5405, 5406)
    assert link1.knet_transport == "sctp"


# -- typed keys ------------------------------------------------------------------------------------------------------


def test_keys_carry_corosync_types() -> None:
    config = load(CONF / "knet_multilink.conf")
    assert config.keys["totem.version"] == (ValueType.UINT32, 2)
    assert config.keys["totem.config_version"] == (ValueType.UINT64, 2**64 - 1)
    assert config.keys["totem.knet_compression_level"] == (ValueType.INT32, -1)
    assert config.keys["totem.ip_dscp"] == (ValueType.UINT8, 34)  # af41
    assert config.keys["totem.interface.1.knet_link_priority"] == (ValueType.UINT8, 10)
    assert config.keys["nodelist.node.3.nodeid"] == (ValueType.UINT32, 40)
    assert config.keys["nodelist.node.3.ring1_addr"] == (ValueType.STRING, "10.2.0.4")
    assert config.totem.netmtu == 65536
    assert (config.totem.crypto_cipher, config.totem.crypto_hash) == ("aes128", "sha1")
    assert config.totem.keyfile == "/etc/corosync/authkey"


def test_quorum_keys_are_u8_booleans_and_u32_counts() -> None:
    config = load(CONF / "quorum_options.conf")
    assert config.keys["quorum.wait_for_all"] == (ValueType.UINT8, 1)
    assert config.keys["quorum.expected_votes"] == (ValueType.UINT32, 5)
    assert config.keys["quorum.device.master_wins"] == (ValueType.UINT8, 0)
    assert config.keys["quorum.device.net.host"] == (ValueType.STRING, "qnetd.example.org")
    assert config.keys["quorum.device.heuristics.exec_ping"] == (ValueType.STRING, "/bin/ping -q -c 1 192.0.2.1")
    assert [n.quorum_votes for n in config.nodes] == [2, 1, 1]
    assert config.totem.token_ms == 5000  # token_coefficient 0


def test_every_section_lands_under_its_dotted_prefix() -> None:
    config = load(CONF / "everything.conf")
    assert config.keys["logging.logger_subsys.CPG.debug"] == (ValueType.STRING, "on")
    assert config.keys["logging.logger_subsys.TOTEM.subsys"] == (ValueType.STRING, "TOTEM")
    assert config.keys["uidgid.config.uid.0"] == (ValueType.UINT8, 1)
    assert config.keys["uidgid.config.gid.0"] == (ValueType.UINT8, 1)  # group "root"
    assert config.keys["uidgid.config.uid.1234"] == (ValueType.UINT8, 1)
    assert config.keys["resources.system.memory_used.poll_period"] == (ValueType.UINT64, 5000)
    assert config.keys["resources.watchdog_timeout"] == (ValueType.UINT32, 10)
    assert config.keys["nozzle.macaddr"] == (ValueType.STRING, "00:00:00:00:00:00")
    assert config.get("monitoring.prometheus") == "127.0.0.1:9405"
    assert config.run_dir == "/run/pcs-test"
    assert config.totem.netmtu == 9000
    assert config.totem.cancel_token_hold_on_retransmit and not config.totem.block_unlisted_ips
    assert config.totem.token_warning_ms == 0
    assert config.keys["runtime.config.totem.block_unlisted_ips"] == (ValueType.UINT32, 0)
    assert config.totem.crypto_enabled  # pycorosync encrypts on udpu too


def test_secauth_on_means_aes256_and_sha256() -> None:
    config = load(CONF / "ipv6_knet.conf")
    assert (config.totem.crypto_cipher, config.totem.crypto_hash) == ("aes256", "sha256")
    assert config.totem.token_ms == 4950
    assert config.nodes[1].addrs == ("fe80::2%eth0",)


def test_a_missing_optional_key_reads_as_the_default() -> None:
    config = parse(_conf(*_addresses(2)))
    assert config.get("totem.netmtu") is None
    assert config.get("totem.netmtu", 1500) == 1500
    assert config.run_dir is None


# -- grammar ----------------------------------------------------------------------------------------------------------


def test_value_is_split_at_the_first_colon_only() -> None:
    config = parse(_conf("fd00::1", "fd00::2"))
    assert config.get("nodelist.node.0.ring0_addr") == "fd00::1"


def test_comments_blank_lines_and_trailing_blanks_are_ignored() -> None:
    text = (
        "# a comment\n   \t# an indented comment\n\n"
        "totem {  \r\n\tversion:2\xa0\r\n    cluster_name:   with spaces inside  \t\n}\n"
        "nodelist {\n node {\n  nodeid: 1\n  ring0_addr: 10.0.0.1\n }\n}\n"
    )
    config = parse(text)
    assert config.get("totem.version") == 2
    assert config.get("totem.cluster_name") == "with spaces inside"


def test_a_hash_after_a_value_is_part_of_the_value() -> None:
    config = parse(_conf("10.0.0.1", totem="    cluster_name: a # not a comment\n"))
    assert config.get("totem.cluster_name") == "a # not a comment"


def test_an_empty_value_is_allowed() -> None:
    config = parse(_conf("10.0.0.1", extra="logging {\n    logfile:\n}\n"))
    assert config.get("logging.logfile") == ""


def test_line_limit_is_510_bytes() -> None:
    def with_name(length: int) -> str:
        prefix = "    cluster_name: "
        return _conf("10.0.0.1", totem=prefix + "x" * (length - len(prefix)) + "\n").replace(
            "    cluster_name: t\n", ""
        )

    assert len(parse(with_name(510)).get("totem.cluster_name") or "") == 510 - len("    cluster_name: ")
    with pytest.raises(ConfigError, match="Line too long"):
        parse(with_name(511))


def test_sections_may_repeat_and_merge() -> None:
    text = (
        _conf("10.0.0.1")
        + "totem {\n    token: 2000\n}\nnodelist {\n    node {\n        nodeid: 2\n"
        + ("        ring0_addr: 10.0.0.2\n    }\n}\n")
    )
    config = parse(text)
    assert config.totem.token_ms == 2000
    assert [n.pos for n in config.nodes] == [0, 1]


def test_error_carries_filename_line_and_key() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(_conf("10.0.0.1", totem="    token: 3s\n"), filename="my.conf")
    error = caught.value
    assert (error.filename, error.line, error.key) == ("my.conf", 5, "totem.token")
    assert str(error) == "my.conf:5: totem.token must be an integer in ms, got '3s'"


def test_integers_accept_a_sign_like_strtol() -> None:
    assert parse(_conf("10.0.0.1", totem="    token: +2000\n")).totem.token_ms == 2000


# -- node ids -------------------------------------------------------------------------------------------------------


def test_udp_node_ids_derive_from_ring0_ipv4() -> None:
    config = load(CONF / "udp_multicast.conf")
    assert [n.nodeid for n in config.nodes] == [0xC0A80A01, 0xC0A80A02]
    assert config.nodes[0].nodeid_derived
    assert config.keys["nodelist.node.0.nodeid"] == (ValueType.UINT32, 0xC0A80A01)


def test_clear_node_high_bit_clears_bit_31_of_derived_ids() -> None:
    config = load(CONF / "udp_derived_mcast.conf")
    assert [n.nodeid for n in config.nodes] == [0xC0A80101 & 0x7FFFFFFF, 0xC0A80102 & 0x7FFFFFFF]


def test_hostnames_are_accepted_without_resolving_them() -> None:
    config = load(CONF / "quorum_options.conf")
    assert config.nodes[0].addrs == ("n1.example.org",)


# -- udp multicast ---------------------------------------------------------------------------------------------


def test_udp_multicast_settings_are_kept() -> None:
    link = load(CONF / "udp_multicast.conf").totem.links[0]
    assert (link.mcastaddr, link.mcastport, link.ttl, link.bindnetaddr) == ("239.255.1.1", 5505, 4, "192.168.10.0")


def test_udp_multicast_group_derives_from_cluster_name() -> None:
    config = load(CONF / "udp_derived_mcast.conf")
    # "derived": value = sum of chars with shifts -> 0x3341; 239.192.(0x33).(0x3341 % 255)
    assert config.keys["totem.interface.0.mcastaddr"] == (ValueType.STRING, "239.192.51.65")
    assert config.keys["totem.interface.0.mcastport"] == (ValueType.UINT16, 5405)
    assert config.totem.ip_version == "ipv4"


def test_udp_multicast_group_of_a_one_letter_cluster() -> None:
    config = parse(_conf("10.0.0.1", transport="udp").replace("cluster_name: t", "cluster_name: a"))
    assert config.get("totem.interface.0.mcastaddr") == "239.192.0.97"


def test_udp_ipv6_cluster_gets_an_ff15_group() -> None:
    text = _conf("fd00::1", "fd00::2", transport="udp", totem="    ip_version: ipv6\n")
    assert parse(text).get("totem.interface.0.mcastaddr") == "ff15::74"


# -- local node ---------------------------------------------------------------------------------------------------------


def test_local_node_by_explicit_nodeid() -> None:
    config = load(CONF / "demo3_udpu.conf")
    node = config.local_node(2)
    assert (node.pos, node.nodeid, node.name, node.addrs) == (1, 2, "beta", ("10.0.0.12",))


def test_unknown_explicit_nodeid_is_an_error() -> None:
    with pytest.raises(ConfigError, match="nodeid 9 is not in the nodelist"):
        load(CONF / "demo3_udpu.conf").local_node(9)


def test_local_node_by_host_name() -> None:
    config = load(CONF / "demo3_udpu.conf")
    assert config.local_node(hostname="gamma.example.org", addresses=[], resolve=False).nodeid == 3


def test_local_node_by_local_address() -> None:
    config = load(CONF / "demo3_udpu.conf")
    assert config.local_node(hostname="elsewhere", addresses=["10.0.0.12"], resolve=False).nodeid == 2


def test_no_matching_node_is_reported_like_corosync() -> None:
    config = load(CONF / "demo3_udpu.conf")
    with pytest.raises(ConfigError) as caught:
        config.local_node(hostname="elsewhere", addresses=["192.0.2.99"], resolve=False)
    assert str(caught.value).endswith(": No valid name found for local host")


def test_loopback_node_is_found_on_this_host() -> None:
    config = load(CONF / "everything.conf")
    assert config.local_node(hostname="no-such-host-name", resolve=False).nodeid == 7


def test_local_keys_add_position_and_bind_addresses() -> None:
    config = load(CONF / "knet_multilink.conf")
    keys = config.all_keys(config.local_node(30))
    assert keys["nodelist.local_node_pos"] == (ValueType.UINT32, 2)
    assert keys["totem.interface.0.bindnetaddr"] == (ValueType.STRING, "10.1.0.3")
    assert keys["totem.interface.1.bindnetaddr"] == (ValueType.STRING, "10.2.0.3")
    assert list(keys) == sorted(keys)
    assert "nodelist.local_node_pos" not in config.all_keys()


# -- files ------------------------------------------------------------------------------------------------------------


def test_load_reads_uidgid_files_beside_the_config(tmp_path: Path) -> None:
    (tmp_path / "corosync.conf").write_text(_conf("10.0.0.1"))
    (tmp_path / "uidgid.d").mkdir()
    (tmp_path / "uidgid.d" / "app").write_text("uidgid {\n    uid: 4242\n    gid: 4343\n}\n")
    config = load(tmp_path / "corosync.conf")
    assert config.keys["uidgid.config.uid.4242"] == (ValueType.UINT8, 1)
    assert config.keys["uidgid.config.gid.4343"] == (ValueType.UINT8, 1)


def test_uidgid_files_may_hold_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "corosync.conf").write_text(_conf("10.0.0.1"))
    (tmp_path / "uidgid.d").mkdir()
    (tmp_path / "uidgid.d" / "app").write_text("totem {\n}\n")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "corosync.conf")
    assert (
        str(caught.value) == f"{tmp_path / 'uidgid.d' / 'app'}:1: unknown section 'totem' (only uidgid is allowed here)"
    )


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Can't read file .*missing\.conf: No such file or directory"):
        load(tmp_path / "missing.conf")


def test_error_messages_use_the_path_given_to_load(tmp_path: Path) -> None:
    path = tmp_path / "bad.conf"
    path.write_text("totem {\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}:1: Missing closing brace (section 'totem')"


# -- warnings, keys, limits -----------------------------------------------------------------------------------------


def test_accepted_but_doubtful_settings_are_reported_as_warnings() -> None:
    text = _conf(
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
        totem="    nodeid: 5\n    interface {\n        bindnetaddr: 10.0.0.0\n    }\n",
        extra="quorum {\n    provider: corosync_votequorum\n    two_node: 1\n    auto_tie_breaker: 1\n}\n",
    )
    warnings = parse(text).warnings
    assert "nodeid appears both in totem section and nodelist. Nodelist one is used." in warnings
    assert "interface section bindnetaddr is used together with nodelist. Nodelist one is going to be used." in warnings
    assert "two_node is disabled: the nodelist has more than 2 nodes" in warnings
    assert parse(_conf("10.0.0.1")).warnings == ()


def test_warnings_go_to_stderr_of_the_cli_while_the_dump_stays_clean(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "corosync.conf"
    path.write_text(_conf("10.0.0.1", totem="    nodeid: 5\n"))
    result = subprocess.run(
        [sys.executable, "-m", "pycorosync", "config", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert "warning:" in result.stderr and "Nodelist one is used" in result.stderr
    assert "warning:" not in result.stdout


def test_authkey_is_read_from_keyfile_inline_key_or_not_at_all(tmp_path: Path) -> None:
    keyfile = tmp_path / "authkey"
    keyfile.write_bytes(bytes(range(256)))
    crypto = "    crypto_cipher: aes256\n    crypto_hash: sha256\n"
    assert parse(_conf("10.0.0.1")).read_authkey(default_path=keyfile) is None
    with_file = parse(_conf("10.0.0.1", totem=crypto + f"    keyfile: {keyfile}\n"))
    assert with_file.read_authkey() == bytes(range(256))
    inline = parse(_conf("10.0.0.1", totem=crypto + "    key: " + "k" * 128 + "\n"))
    assert inline.read_authkey(default_path=tmp_path / "unused") == b"k" * 128
    default = parse(_conf("10.0.0.1", totem=crypto))
    assert default.read_authkey(default_path=keyfile) == bytes(range(256))


def test_short_or_missing_key_files_are_refused_in_corosyncs_words(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"x" * 100)
    crypto = "    crypto_cipher: aes256\n    crypto_hash: sha256\n"
    config = parse(_conf("10.0.0.1", totem=crypto + f"    keyfile: {short}\n"))
    with pytest.raises(ConfigError) as caught:
        config.read_authkey()
    assert str(caught.value) == f"corosync.conf:7: Could only read 800 bits of minimum 1024 bits from {short}."
    with pytest.raises(ConfigError, match=r"Could not open .*: No such file or directory"):
        parse(_conf("10.0.0.1", totem=crypto)).read_authkey(default_path=tmp_path / "none")


def test_nodelist_is_limited_to_384_nodes() -> None:
    addresses = [f"10.{i // 250}.{i % 250}.1" for i in range(385)]
    big = "    netmtu: 20000\n"  # 384 commit token entries need 17,314 bytes in one frame
    assert len(parse(_conf(*addresses[:384], totem=big)).nodes) == 384
    with pytest.raises(ConfigError, match=r"too many nodes in the nodelist \(385, at most 384\)"):
        parse(_conf(*addresses, totem=big))


@pytest.mark.parametrize(("first", "second"), [("fd00::1", "fd00:0::1"), ("Node-A.example", "node-a.example")])
def test_the_same_address_written_twice_differently_is_still_a_duplicate(first: str, second: str) -> None:
    with pytest.raises(ConfigError, match=f"Address {second} appears twice on link 0"):
        parse(_conf(first, second))


def test_static_member_lists_are_kept_but_reported_as_deprecated() -> None:
    text = (
        "totem {\n    version: 2\n    transport: udp\n    interface {\n        bindnetaddr: 10.0.0.0\n"
        "        mcastaddr: 239.1.1.1\n        member {\n            memberaddr: 10.0.0.1\n        }\n"
        "        member {\n            memberaddr: 10.0.0.2\n        }\n    }\n}\n"
    )
    config = parse(text)
    assert config.get("totem.interface.0.member.1") == "10.0.0.2"
    assert config.warnings == ("member section is deprecated.",)
    assert config.nodes == ()


# -- the commit token must go out: IP fragments it over UDP, InfiniBand needs it in one frame -------------------------


def _many(count: int) -> list[str]:
    return [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(count)]


NO_CRYPTO = "    token_coefficient: 0\n    crypto_cipher: none\n    crypto_hash: none\n"


def test_over_udp_a_commit_token_longer_than_netmtu_is_accepted_it_goes_whole_and_ip_fragments_it() -> None:
    # 384 nodes (corosync's processor limit) need a 17,314-byte commit token at netmtu 1500
    assert len(parse(_conf(*_many(384), totem=NO_CRYPTO)).nodes) == 384
    aes = "    token_coefficient: 0\n    crypto_cipher: aes256\n    crypto_hash: sha256\n"
    assert len(parse(_conf(*_many(384), totem=aes, transport="udp")).nodes) == 384
    with pytest.raises(ConfigError, match=r"too many nodes in the nodelist \(385, at most 384\)"):
        parse(_conf(*_many(385), totem=NO_CRYPTO))


def test_over_infiniband_the_commit_token_must_fit_one_frame_and_one_more_node_is_refused_with_the_fix() -> None:
    # netmtu 1500, IPv4 (28 header bytes), the transport's 32-byte header, no crypto: 1440 bytes per frame
    assert len(parse(_conf(*_many(31), totem=NO_CRYPTO, transport="iba")).nodes) == 31
    with pytest.raises(ConfigError) as err:
        parse(_conf(*_many(32), totem=NO_CRYPTO, transport="iba"))
    text = str(err.value)
    assert "32 nodes need a commit token of 1474 bytes, more than the 1440 bytes one frame carries" in text
    assert "InfiniBand cannot fragment a frame: at most 31 nodes fit; set totem.netmtu to at least 1534" in text
    assert len(parse(_conf(*_many(100), totem=NO_CRYPTO + "    netmtu: 9000\n", transport="iba")).nodes) == 100


def test_crypto_and_ipv6_leave_less_room_for_the_commit_token() -> None:
    aes = "    token_coefficient: 0\n    crypto_cipher: aes256\n    crypto_hash: sha256\n"
    with pytest.raises(ConfigError, match="at most 30 nodes fit"):  # 1500 - 28 - (32 + 16) = 1424 bytes
        parse(_conf(*_many(31), totem=aes, transport="iba"))
    v6 = [f"fd00::{i + 1:x}" for i in range(31)]
    with pytest.raises(ConfigError, match="at most 30 nodes fit"):  # IPv6 headers: 1500 - 48 - 32 = 1420 bytes
        parse(_conf(*v6, totem=NO_CRYPTO, transport="iba"))


def test_a_netmtu_too_small_for_a_full_token_is_refused_at_its_line() -> None:
    small = "    token_coefficient: 0\n    crypto_cipher: none\n    crypto_hash: none\n    netmtu: %d\n"
    parse(_conf(*_addresses(3), totem=small % 380))  # 380 - 28 - 32 = 320 bytes: a full token fits
    with pytest.raises(ConfigError, match=r"corosync.conf:\d+: 319 bytes per frame with netmtu 379 .*at least 320 "
                                          r"are needed; set totem.netmtu to at least 380"):
        parse(_conf(*_addresses(3), totem=small % 379))
