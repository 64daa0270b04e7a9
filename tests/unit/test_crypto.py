"""Frame protection: corosync's crypto names, the authkey rules, sealing and opening frames."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycorosync.transports import crypto
from pycorosync.transports.crypto import (
    HEADER_BYTES,
    CryptoConfigError,
    CryptoSettings,
    FrameCodec,
    FrameHeader,
    check_header,
    load_authkey,
    validate_crypto_names,
)

KEY = bytes(range(256))
MODES = [("none", "none"), ("none", "md5"), ("none", "sha1"), ("none", "sha256"), ("none", "sha384"),
         ("none", "sha512"), ("aes128", "sha256"), ("aes192", "sha1"), ("aes256", "sha512")]


def codec(cipher: str, hash_name: str, node: int = 1, boot: int = 1000, cluster: str = "c", key: bytes = KEY):
    return FrameCodec(CryptoSettings(cipher, hash_name, cluster, key), node, boot)


def open_frame(rx: FrameCodec, data: bytes) -> bytes | None:
    hdr = FrameHeader.unpack(data)
    out = bytearray(len(data))
    n = rx.open_into(memoryview(data), hdr.sender, hdr.boot_id, hdr.counter, memoryview(out))
    return None if n < 0 else bytes(out[:n])


@pytest.mark.parametrize(("cipher", "hash_name"), MODES)
def test_sealed_frame_opens_to_the_same_payload_with_the_same_key(cipher: str, hash_name: str) -> None:
    tx, rx = codec(cipher, hash_name, node=1), codec(cipher, hash_name, node=2)
    for payload in (b"", b"x", os.urandom(1400)):
        wire = tx.seal(payload)
        assert len(wire) == len(payload) + tx.overhead
        assert open_frame(rx, wire) == payload


@pytest.mark.parametrize(("cipher", "hash_name"), [m for m in MODES if m != ("none", "none")])
def test_any_flipped_bit_fails_authentication(cipher: str, hash_name: str) -> None:
    tx, rx = codec(cipher, hash_name, node=1), codec(cipher, hash_name, node=2)
    wire = tx.seal(b"token frame payload" * 10)
    for bit in range(0, len(wire) * 8, 7):
        bad = bytearray(wire)
        bad[bit // 8] ^= 1 << (bit % 8)
        assert open_frame(rx, bytes(bad)) is None, f"bit {bit} flipped was accepted"


@pytest.mark.parametrize(("cipher", "hash_name"), [("aes256", "sha256"), ("none", "sha256")])
def test_a_different_authkey_never_opens_a_frame(cipher: str, hash_name: str) -> None:
    tx = codec(cipher, hash_name, node=1)
    rx = codec(cipher, hash_name, node=2, key=bytes(reversed(KEY)))
    assert open_frame(rx, tx.seal(b"hello")) is None


def test_aes_gcm_hides_the_payload_and_the_nonce_never_repeats() -> None:
    tx = codec("aes256", "sha256")
    frames = [tx.seal(b"A" * 64) for _ in range(50)]
    assert all(b"A" * 16 not in f for f in frames)
    counters = [FrameHeader.unpack(f).counter for f in frames]
    assert counters == list(range(1, 51))
    assert len({f[HEADER_BYTES:] for f in frames}) == 50


def test_two_nodes_sealing_the_same_counter_use_different_keys() -> None:
    a, b = codec("aes256", "sha256", node=1, boot=5), codec("aes256", "sha256", node=2, boot=5)
    assert a.seal(b"same")[HEADER_BYTES:] != b.seal(b"same")[HEADER_BYTES:]


def test_header_carries_cluster_sender_boot_and_counter() -> None:
    tx = codec("none", "none", node=7, boot=123456, cluster="alpha")
    hdr = FrameHeader.unpack(tx.seal(b"p"))
    assert (hdr.magic, hdr.version, hdr.sender, hdr.boot_id, hdr.counter) == (crypto.MAGIC, crypto.VERSION, 7, 123456, 1)
    assert hdr.cluster_hash == crypto.cluster_hash("alpha") != crypto.cluster_hash("beta")


def test_header_check_names_each_drop_reason() -> None:
    tx = codec("aes256", "sha256", cluster="alpha")
    wire = tx.seal(b"payload")
    chash = crypto.cluster_hash("alpha")
    assert check_header(wire, crypto.MODE_AEAD, chash, 1472) is None
    assert check_header(wire[:10], crypto.MODE_AEAD, chash, 1472) == "too_short"
    assert check_header(b"\0" * 40, crypto.MODE_AEAD, chash, 1472) == "bad_header"
    assert check_header(wire, crypto.MODE_AEAD, crypto.cluster_hash("beta"), 1472) == "wrong_cluster"
    assert check_header(wire, crypto.MODE_HMAC, chash, 1472) == "bad_auth"
    assert check_header(wire + bytes(2000), crypto.MODE_AEAD, chash, 1472) == "oversized"


def test_cipher_without_hash_is_rejected_as_corosync_does() -> None:
    with pytest.raises(CryptoConfigError, match="crypto_cipher requires crypto_hash"):
        validate_crypto_names("aes256", "none")


@pytest.mark.parametrize(("cipher", "hash_name", "word"), [("aes512", "sha256", "cipher"), ("none", "sha3", "hash")])
def test_unknown_crypto_names_are_rejected_with_the_key_name(cipher: str, hash_name: str, word: str) -> None:
    with pytest.raises(CryptoConfigError, match=f"crypto_{word}"):
        validate_crypto_names(cipher, hash_name)


def test_crypto_names_are_case_insensitive_and_default_to_none() -> None:
    assert validate_crypto_names("AES256", "SHA256") == ("aes256", "sha256")
    assert validate_crypto_names("", "") == ("none", "none")


def _keyfile(tmp_path: Path, size: int, mode: int = 0o400) -> Path:
    path = tmp_path / "authkey"
    path.write_bytes(os.urandom(size))
    path.chmod(mode)
    return path


def test_authkey_file_shorter_than_128_bytes_is_refused_in_corosync_words(tmp_path: Path) -> None:
    path = _keyfile(tmp_path, 100)
    with pytest.raises(CryptoConfigError, match="Could only read 800 bits of minimum 1024 bits"):
        load_authkey(str(path))


def test_authkey_file_is_read_up_to_4096_bytes(tmp_path: Path) -> None:
    path = _keyfile(tmp_path, 5000)
    assert len(load_authkey(str(path))) == 4096
    path128 = tmp_path / "k128"
    path128.write_bytes(b"k" * 128)
    path128.chmod(0o600)
    assert load_authkey(str(path128)) == b"k" * 128


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o620])
def test_authkey_readable_by_others_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = _keyfile(tmp_path, 256, mode)
    with pytest.raises(CryptoConfigError, match=r"chmod 0400"):
        load_authkey(str(path))


def test_missing_authkey_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(CryptoConfigError, match=str(tmp_path / "nope")):
        load_authkey(str(tmp_path / "nope"))


def test_inline_key_is_used_when_no_keyfile_is_set_and_must_be_long_enough() -> None:
    assert load_authkey(None, "k" * 200) == b"k" * 200
    with pytest.raises(CryptoConfigError, match=r"totem\.key: Could only read 80 bits"):
        load_authkey(None, "short key!")


def test_keyfile_wins_over_inline_key(tmp_path: Path) -> None:
    path = _keyfile(tmp_path, 256)
    assert load_authkey(str(path), "k" * 200) == path.read_bytes()


def test_settings_from_config_reads_totem_fields_and_loads_the_key(tmp_path: Path) -> None:
    class Totem:
        crypto_cipher = "aes128"
        crypto_hash = "sha1"
        cluster_name = "alpha"
        keyfile = str(_keyfile(tmp_path, 256))

    class Config:
        totem = Totem()
        keys: dict[str, object] = {}

    s = crypto.settings_from_config(Config())
    assert (s.cipher, s.hash, s.cluster_name, s.mode) == ("aes128", "sha1", "alpha", crypto.MODE_AEAD)
    assert s.authkey == Path(Totem.keyfile).read_bytes()


def test_plain_cluster_needs_no_key_file() -> None:
    class Config:
        totem = None
        keys = {"totem.cluster_name": "x"}

    s = crypto.settings_from_config(Config())
    assert (s.mode, s.authkey, s.overhead) == (crypto.MODE_PLAIN, b"", HEADER_BYTES)
