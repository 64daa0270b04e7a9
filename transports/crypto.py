"""Frame protection between nodes: the authkey, key derivation, and sealing/opening of frames.

Every datagram on the wire is one Totem frame with a fixed 32-byte header (see transports/README.md):

    magic u16 | version u8 | mode u8 | cluster_hash u32 | sender u32 | reserved u32 | boot_id u64 | counter u64

little-endian, followed by the frame protected according to ``mode``:

* ``MODE_AEAD`` (``crypto_cipher`` aes256/aes192/aes128): AES-GCM ciphertext + 16-byte tag, the header as
  associated data. The key is per (sender, boot_id), derived from the cluster key, and the 12-byte nonce
  is header bytes 20..32: ``boot_id``'s high 32 bits + ``counter``. The counter never repeats within an
  incarnation and every incarnation has its own key, so no (key, nonce) pair is ever used twice.
* ``MODE_HMAC`` (cipher none, hash set): plaintext + HMAC(header + plaintext) with ``crypto_hash``.
* ``MODE_PLAIN`` (both none): plaintext; the header still carries the cluster hash, the sender and the
  counter, so frames of another cluster and duplicates are dropped all the same.

``boot_id`` is the sender's start time (CLOCK_REALTIME ns), so a restarted node's frames are recognised as a
newer incarnation and older incarnations are refused as replays. A per-sender 1024-frame window drops replays
inside one incarnation.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = 0x5043  # "CP" little-endian on the wire
VERSION = 1
HEADER = struct.Struct("<HBBIIIQQ")
HEADER_BYTES = HEADER.size  # 32
assert HEADER_BYTES == 32

MODE_PLAIN = 0
MODE_HMAC = 1
MODE_AEAD = 2

GCM_TAG_BYTES = 16
DEFAULT_KEYFILE = "/etc/corosync/authkey"
KEY_MIN_BYTES = 128
KEY_MAX_BYTES = 4096

# corosync's names and the AES key size each selects
CIPHER_KEY_BYTES: dict[str, int] = {"none": 0, "aes128": 16, "aes192": 24, "aes256": 32}
# corosync's names and the digest length each gives
HASH_BYTES: dict[str, int] = {"none": 0, "md5": 16, "sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

# why a received datagram was dropped; the transport counts each reason separately
DROP_REASONS = ("too_short", "bad_header", "wrong_cluster", "unknown_node", "replay", "bad_auth", "oversized")


class CryptoConfigError(ValueError):
    """The crypto settings or the authkey are unusable; the message says what and where."""


@dataclass(frozen=True)
class CryptoSettings:
    """What protects the frames of one cluster: corosync's cipher/hash names, the cluster name, the authkey."""

    cipher: str
    hash: str
    cluster_name: str
    authkey: bytes

    @property
    def mode(self) -> int:
        if self.cipher != "none":
            return MODE_AEAD
        if self.hash != "none":
            return MODE_HMAC
        return MODE_PLAIN

    @property
    def overhead(self) -> int:
        """Bytes a frame grows by on the wire (header + tag or MAC)."""
        if self.mode == MODE_AEAD:
            return HEADER_BYTES + GCM_TAG_BYTES
        if self.mode == MODE_HMAC:
            return HEADER_BYTES + HASH_BYTES[self.hash]
        return HEADER_BYTES


def validate_crypto_names(cipher: str, hash_name: str) -> tuple[str, str]:
    """Checks corosync's crypto_cipher/crypto_hash pair; returns them normalised to lower case."""
    cipher = (cipher or "none").lower()
    hash_name = (hash_name or "none").lower()
    if cipher not in CIPHER_KEY_BYTES:
        raise CryptoConfigError(f"totem.crypto_cipher: unknown cipher '{cipher}' (none, aes256, aes192, aes128)")
    if hash_name not in HASH_BYTES:
        raise CryptoConfigError(
            f"totem.crypto_hash: unknown hash '{hash_name}' (none, md5, sha1, sha256, sha384, sha512)"
        )
    if cipher != "none" and hash_name == "none":
        raise CryptoConfigError("crypto_cipher requires crypto_hash with value other than none")
    return cipher, hash_name


def load_authkey(keyfile: str | None = None, key: str | bytes | None = None) -> bytes:
    """The cluster authkey: ``totem.keyfile``, else inline ``totem.key``, else /etc/corosync/authkey.

    As corosync: at most 4096 bytes are read, fewer than 128 is refused. A key file that other users can
    read (or that its group can write) is refused too: anyone holding the key can join the cluster.
    """
    if not keyfile and key:
        raw = key.encode() if isinstance(key, str) else bytes(key)
        if len(raw) < KEY_MIN_BYTES:
            raise CryptoConfigError(
                f"totem.key: Could only read {len(raw) * 8} bits of minimum {KEY_MIN_BYTES * 8} bits"
            )
        return raw[:KEY_MAX_BYTES]
    path = Path(keyfile or DEFAULT_KEYFILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CryptoConfigError(f"authkey {path}: cannot open: {exc.strerror}") from None
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o027:
            raise CryptoConfigError(
                f"authkey {path}: mode {mode:04o} lets other users read or change it; run 'chmod 0400 {path}'"
            )
        raw = b""
        while len(raw) < KEY_MAX_BYTES:
            chunk = os.read(fd, KEY_MAX_BYTES - len(raw))
            if not chunk:
                break
            raw += chunk
    finally:
        os.close(fd)
    if len(raw) < KEY_MIN_BYTES:
        raise CryptoConfigError(
            f"authkey {path}: Could only read {len(raw) * 8} bits of minimum {KEY_MIN_BYTES * 8} bits"
        )
    return raw


def settings_from_config(config: Any) -> CryptoSettings:
    """Builds CryptoSettings from a CorosyncConfig (``config.totem`` fields, or flat ``config.keys``).

    The authkey is loaded only when a cipher or hash is set: a plain cluster needs no key file.
    """
    cipher = str(_totem_value(config, "crypto_cipher", "none"))
    hash_name = str(_totem_value(config, "crypto_hash", "none"))
    if str(_totem_value(config, "secauth", "off")).lower() == "on":
        cipher = "aes256" if cipher == "none" else cipher
        hash_name = "sha256" if hash_name == "none" else hash_name
    cipher, hash_name = validate_crypto_names(cipher, hash_name)
    cluster_name = str(_totem_value(config, "cluster_name", "") or "")
    authkey = b""
    if cipher != "none" or hash_name != "none":
        authkey = load_authkey(_totem_value(config, "keyfile", None), _totem_value(config, "key", None))
    return CryptoSettings(cipher, hash_name, cluster_name, authkey)


def _totem_value(config: Any, name: str, default: Any) -> Any:
    totem = getattr(config, "totem", None)
    value = getattr(totem, name, None) if totem is not None else None
    if value is None:
        keys = getattr(config, "keys", None) or {}
        value = keys.get(f"totem.{name}")
        if isinstance(value, tuple):  # CorosyncConfig.keys holds (type, value)
            value = value[1]
    return default if value is None else value


def cluster_hash(cluster_name: str) -> int:
    """32-bit tag of the cluster name carried in every frame (frames of another cluster are dropped)."""
    return int.from_bytes(hashlib.sha256(b"pycorosync-cluster:" + cluster_name.encode()).digest()[:4], "little")


def _hkdf(key: bytes, salt: bytes | None, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


@dataclass(frozen=True)
class FrameHeader:
    """The fixed header in front of every frame on the wire."""

    mode: int
    cluster_hash: int
    sender: int
    boot_id: int
    counter: int
    magic: int = MAGIC
    version: int = VERSION

    def pack(self) -> bytes:
        return HEADER.pack(
            self.magic, self.version, self.mode, self.cluster_hash, self.sender, 0, self.boot_id, self.counter
        )

    @classmethod
    def unpack(cls, data: bytes | memoryview) -> FrameHeader:
        magic, version, mode, chash, sender, _res, boot_id, counter = HEADER.unpack_from(data, 0)
        return cls(mode, chash, sender, boot_id, counter, magic, version)


class FrameCodec:
    """Seals outgoing frames and opens incoming ones for one node; keeps no per-peer replay state.

    Replay and incarnation checks belong to the caller (``transports.peers``), which must call
    :meth:`open_into` only for headers that passed them, and mark the counter only after it succeeds.
    """

    def __init__(self, settings: CryptoSettings, node_id: int, boot_id: int) -> None:
        self.settings = settings
        self.mode = settings.mode
        self.overhead = settings.overhead
        self.node_id = node_id
        self.boot_id = boot_id
        self.cluster_hash = cluster_hash(settings.cluster_name)
        self.trailer = self.overhead - HEADER_BYTES
        self._counter = 0
        self._master = b""
        self._hmac_key = b""
        self._digest = settings.hash
        if self.mode != MODE_PLAIN:
            salt = b"pycorosync:" + settings.cluster_name.encode()
            info = f"frame-key {settings.cipher} {settings.hash}".encode()
            self._master = _hkdf(settings.authkey, salt, info, 32)
            self._hmac_key = self._master
        # AESGCM objects are cached: building one costs as much as sealing a small frame
        self._aead_cache: dict[tuple[int, int], AESGCM] = {}
        self._tx_aead = self.aead_for(node_id, boot_id) if self.mode == MODE_AEAD else None

    # -- keys ------------------------------------------------------------------------------------------
    def aead_for(self, sender: int, boot_id: int) -> AESGCM:
        """The AES-GCM object of one sender incarnation (cached; at most a few live at once)."""
        key = (sender, boot_id)
        aead = self._aead_cache.get(key)
        if aead is None:
            aead = AESGCM(self.key_for(sender, boot_id))
            if len(self._aead_cache) >= 64:  # bounded: a flood of forged boot ids must not grow memory
                self._aead_cache.clear()
                if self._tx_aead is not None:
                    self._aead_cache[(self.node_id, self.boot_id)] = self._tx_aead
            self._aead_cache[key] = aead
        return aead

    def key_for(self, sender: int, boot_id: int) -> bytes:
        """The AES-GCM key of one sender incarnation (HKDF of the cluster key)."""
        info = b"sender-key" + struct.pack("<IQ", sender, boot_id)
        return _hkdf(self._master, None, info, CIPHER_KEY_BYTES[self.settings.cipher])

    def forget(self, sender: int, boot_id: int) -> None:
        """Drops a cached key of an incarnation that is no longer current."""
        self._aead_cache.pop((sender, boot_id), None)

    # -- sealing ---------------------------------------------------------------------------------------
    @property
    def counter(self) -> int:
        """The counter of the last frame sealed (0 before the first)."""
        return self._counter

    def seal_into(self, buf: memoryview, off: int, payload_len: int) -> int:
        """Seals the frame whose plaintext already sits at ``buf[off+32 : off+32+payload_len]``.

        Writes the header at ``off`` and the ciphertext/MAC after it; returns the datagram length.
        ``buf`` must have ``overhead`` bytes of room past the payload.
        """
        self._counter += 1
        HEADER.pack_into(
            buf, off, MAGIC, VERSION, self.mode, self.cluster_hash, self.node_id, 0, self.boot_id, self._counter
        )
        body = off + HEADER_BYTES
        end = body + payload_len
        if self.mode == MODE_AEAD:
            assert self._tx_aead is not None
            nonce = _nonce(self.boot_id, self._counter)
            # encrypt_into cannot write over its own input, so the plaintext is copied out first
            plain = bytes(buf[body:end])
            self._tx_aead.encrypt_into(nonce, plain, buf[off:body], buf[body : end + GCM_TAG_BYTES])
            return payload_len + self.overhead
        if self.mode == MODE_HMAC:
            buf[end : end + self.trailer] = hmac.digest(self._hmac_key, buf[off:end], self._digest)
            return payload_len + self.overhead
        return payload_len + HEADER_BYTES

    def stamp_header(self, buf: memoryview | Any, off: int) -> int:
        """Writes the next frame's header at ``buf[off : off + 32]`` (the counter advances); returns the counter.

        For transports that send the header and the payload from different buffers (verbs scatter/gather).
        """
        self._counter += 1
        HEADER.pack_into(
            buf, off, MAGIC, VERSION, self.mode, self.cluster_hash, self.node_id, 0, self.boot_id, self._counter
        )
        return self._counter

    def mac(self, *parts: bytes | memoryview) -> bytes:
        """HMAC-``crypto_hash`` over the parts in order (header, then payload): an HMAC frame's trailer."""
        h = hmac.new(self._hmac_key, digestmod=self._digest)
        for part in parts:
            h.update(part)
        return h.digest()

    def seal_from(self, payload: memoryview, buf: memoryview, off: int) -> int:
        """AES-GCM: header at ``buf[off]``, then ``payload`` encrypted (read where it lies) and the tag;
        returns the datagram length."""
        assert self.mode == MODE_AEAD and self._tx_aead is not None
        counter = self.stamp_header(buf, off)
        body = off + HEADER_BYTES
        n = len(payload)
        self._tx_aead.encrypt_into(
            _nonce(self.boot_id, counter), payload, buf[off:body], buf[body : body + n + GCM_TAG_BYTES]
        )
        return n + self.overhead

    def seal(self, payload: bytes) -> bytes:
        """One frame as a datagram (convenience for tests and tools; the transport seals in place)."""
        out = bytearray(HEADER_BYTES + len(payload) + self.trailer)
        out[HEADER_BYTES : HEADER_BYTES + len(payload)] = payload
        n = self.seal_into(memoryview(out), 0, len(payload))
        return bytes(out[:n])

    def seal_batch(self, stage: memoryview, plain: memoryview, slot: int, lens: list[int]) -> list[int]:
        """Seals frames whose headers a kernel already wrote at ``stage[i*slot]``; returns datagram lengths.

        AEAD: the plaintext of frame i is at ``plain[i*slot:]`` (GCM cannot encrypt in place here).
        HMAC: the plaintext is in ``stage`` after the header, and the MAC is appended.
        """
        out = []
        if self.mode == MODE_AEAD:
            assert self._tx_aead is not None
            enc = self._tx_aead.encrypt_into
            for i, n in enumerate(lens):
                o = i * slot
                b = o + HEADER_BYTES
                enc(stage[o + NONCE_OFFSET : b], plain[o : o + n], stage[o:b], stage[b : b + n + GCM_TAG_BYTES])
                out.append(n + self.overhead)
        elif self.mode == MODE_HMAC:
            key, digest, mac_len = self._hmac_key, self._digest, self.trailer
            mac = hmac.digest
            for i, n in enumerate(lens):
                e = i * slot + HEADER_BYTES + n
                stage[e : e + mac_len] = mac(key, stage[i * slot : e], digest)
                out.append(n + self.overhead)
        else:
            out = [n + HEADER_BYTES for n in lens]
        return out

    def open_batch(
        self, data: memoryview, out: memoryview, offs: list[int], lens: list[int], senders: list[int]
    ) -> list[int]:
        """Opens datagram j (``data[offs[j]:offs[j]+lens[j]]`` from node ``senders[j]``) into ``out`` at the same
        offset; returns each payload length, -1 where authentication failed. Headers were already checked."""
        res = []
        over = self.overhead
        if self.mode == MODE_AEAD:
            cache = self._aead_cache
            for o, ln, sender in zip(offs, lens, senders):
                n = ln - over
                b = o + HEADER_BYTES
                key = (sender, int.from_bytes(data[o + 16 : o + 24], "little"))
                aead = cache.get(key) or self.aead_for(*key)
                try:
                    aead.decrypt_into(data[o + NONCE_OFFSET : b], data[b : o + ln], data[o:b], out[o : o + n])
                except Exception:  # InvalidTag, or a length the tag check refuses
                    n = -1
                res.append(n)
        elif self.mode == MODE_HMAC:
            hkey, digest = self._hmac_key, self._digest
            for o, ln, _sender in zip(offs, lens, senders):
                e = o + ln - self.trailer
                ok = hmac.compare_digest(hmac.digest(hkey, data[o:e], digest), data[e : o + ln])
                if ok:
                    out[o : o + ln - over] = data[o + HEADER_BYTES : e]
                res.append(ln - over if ok else -1)
        else:
            for o, ln, _sender in zip(offs, lens, senders):
                out[o : o + ln - over] = data[o + HEADER_BYTES : o + ln]
                res.append(ln - over)
        return res

    # -- opening ---------------------------------------------------------------------------------------
    def open_into(self, data: memoryview, sender: int, boot_id: int, counter: int, out: memoryview) -> int:
        """Verifies (and decrypts) one datagram whose header was already checked; returns the payload length.

        The payload is written to ``out[:n]``. Returns -1 when authentication fails.
        """
        n = len(data) - self.overhead
        if n < 0:
            return -1
        if self.mode == MODE_AEAD:
            aead = self.aead_for(sender, boot_id)
            try:
                aead.decrypt_into(_nonce(boot_id, counter), data[HEADER_BYTES:], data[:HEADER_BYTES], out[:n])
            except Exception:  # InvalidTag, or a forged length
                return -1
            return n
        end = HEADER_BYTES + n
        if self.mode == MODE_HMAC:
            mac = hmac.digest(self._hmac_key, data[:end], self._digest)
            if not hmac.compare_digest(mac, data[end:]):
                return -1
        out[:n] = data[HEADER_BYTES:end]
        return n


NONCE_OFFSET = 20  # the nonce is the header's last 12 bytes: high half of boot_id, then counter


def _nonce(boot_id: int, counter: int) -> bytes:
    return struct.pack("<IQ", boot_id >> 32, counter)


def check_header(data: bytes | memoryview, mode: int, chash: int, max_datagram: int) -> str | None:
    """Reference check of a datagram's header: None if acceptable so far, else the drop reason."""
    if len(data) > max_datagram:
        return "oversized"
    if len(data) < HEADER_BYTES:
        return "too_short"
    hdr = FrameHeader.unpack(data)
    if hdr.magic != MAGIC or hdr.version != VERSION:
        return "bad_header"
    if hdr.cluster_hash != chash:
        return "wrong_cluster"
    if hdr.mode != mode:
        return "bad_auth"  # the peer protects frames differently: it can never be authenticated here
    return None
