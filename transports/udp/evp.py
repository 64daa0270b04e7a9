"""AES-GCM for whole batches inside numba, through the system's OpenSSL EVP API (libcrypto).

The Python path (``FrameCodec.seal_batch``/``open_batch`` over ``cryptography``) costs one Python call per
frame; at 1-8 KiB that overhead is as large as the cipher itself. Here a kernel seals or opens a whole batch
with EVP calls resolved by name (``types.ExternalFunction``; libcrypto is made visible to LLVM's resolver
with ``load_library_permanently``). Keys still come from ``FrameCodec`` (HKDF); a context per key is built
once from Python with ctypes.

Availability is detected once (:func:`available`): without libcrypto the transport logs it and keeps the
``cryptography`` path, which produces the same bytes on the wire (the tests compare the two).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

import numba
import numpy as np
from numba import njit, types

from pycorosync.ipc.ring_kernels import RECORD_HEADER_BYTES, ring_commit, ring_peek, ring_release, ring_reserve
from pycorosync.transports.crypto import GCM_TAG_BYTES, HEADER_BYTES, MODE_AEAD, NONCE_OFFSET
from pycorosync.transports.peers import REPLAY, replay_verdict
from pycorosync.transports.udp.frames import (
    C_DROP_BASE,
    C_RX_RING_FULL,
    N_COUNTERS,
    R_BAD_AUTH,
    R_REPLAY,
    TX_DROPPED,
    TX_LARGE,
    finish_accept,
    note_accepted,
    tx_dest_or_drop,
    write_header,
)

log = logging.getLogger("TOTEM")

_i32 = types.int32
_p = types.intp
_EVP = {
    "c_enc_init": ("EVP_EncryptInit_ex", _i32(_p, _p, _p, _p, _p)),
    "c_enc_update": ("EVP_EncryptUpdate", _i32(_p, _p, _p, _p, _i32)),
    "c_enc_final": ("EVP_EncryptFinal_ex", _i32(_p, _p, _p)),
    "c_dec_init": ("EVP_DecryptInit_ex", _i32(_p, _p, _p, _p, _p)),
    "c_dec_update": ("EVP_DecryptUpdate", _i32(_p, _p, _p, _p, _i32)),
    "c_dec_final": ("EVP_DecryptFinal_ex", _i32(_p, _p, _p)),
    "c_ctrl": ("EVP_CIPHER_CTX_ctrl", _i32(_p, _i32, _i32, _p)),
}
if numba.config.DISABLE_JIT:  # plain Python over ctypes (see available(), which binds them)
    c_enc_init = c_enc_update = c_enc_final = c_dec_init = c_dec_update = c_dec_final = c_ctrl = None  # type: ignore[assignment]
else:
    c_enc_init = types.ExternalFunction(*_EVP["c_enc_init"])
    c_enc_update = types.ExternalFunction(*_EVP["c_enc_update"])
    c_enc_final = types.ExternalFunction(*_EVP["c_enc_final"])
    c_dec_init = types.ExternalFunction(*_EVP["c_dec_init"])
    c_dec_update = types.ExternalFunction(*_EVP["c_dec_update"])
    c_dec_final = types.ExternalFunction(*_EVP["c_dec_final"])
    c_ctrl = types.ExternalFunction(*_EVP["c_ctrl"])

EVP_CTRL_GCM_GET_TAG = 0x10
EVP_CTRL_GCM_SET_TAG = 0x11
NEEDS_PYTHON = -2  # open_batch: no context for this sender incarnation yet

_lib: Any = None
_checked = False


def available() -> bool:
    """True once libcrypto is loaded for both ctypes and the kernels (checked once per process)."""
    global _lib, _checked
    if _checked:
        return _lib is not None
    _checked = True
    path = ctypes.util.find_library("crypto")
    try:
        if path is None:
            raise OSError("libcrypto not found")
        from llvmlite import binding

        lib = ctypes.CDLL(path)
        binding.load_library_permanently(path)
        for name in ("EVP_CIPHER_CTX_new", "EVP_CIPHER_CTX_free", "EVP_aes_128_gcm", "EVP_aes_192_gcm",
                     "EVP_aes_256_gcm", "EVP_EncryptInit_ex", "EVP_DecryptInit_ex"):
            getattr(lib, name)
    except (OSError, AttributeError) as exc:
        log.info("OpenSSL libcrypto not usable from numba (%s): AES-GCM runs through 'cryptography'", exc)
        return False
    lib.EVP_CIPHER_CTX_new.restype = ctypes.c_void_p
    lib.EVP_CIPHER_CTX_free.argtypes = [ctypes.c_void_p]
    for bits in (128, 192, 256):
        getattr(lib, f"EVP_aes_{bits}_gcm").restype = ctypes.c_void_p
    for fn in (lib.EVP_EncryptInit_ex, lib.EVP_DecryptInit_ex):
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    _lib = lib
    if numba.config.DISABLE_JIT:
        g = globals()
        for var, (name, sig) in _EVP.items():
            fn = getattr(lib, name)
            fn.argtypes = [ctypes.c_int32 if a == _i32 else ctypes.c_void_p for a in sig.args]
            fn.restype = ctypes.c_int32
            g[var] = lambda *args, fn=fn: fn(*(int(a) for a in args))  # numpy ints are not ctypes-compatible
    return True


class GcmContext:
    """One EVP cipher context bound to one key, for sealing or for opening."""

    def __init__(self, key: bytes, decrypt: bool) -> None:
        assert _lib is not None, "call evp.available() first"
        cipher = getattr(_lib, f"EVP_aes_{len(key) * 8}_gcm")()
        self.ptr = int(_lib.EVP_CIPHER_CTX_new())
        if not self.ptr:
            raise MemoryError("EVP_CIPHER_CTX_new failed")
        init = _lib.EVP_DecryptInit_ex if decrypt else _lib.EVP_EncryptInit_ex
        if init(self.ptr, cipher, None, key, None) != 1:
            self.free()
            raise ValueError("EVP init with an AES-GCM key failed")

    def free(self) -> None:
        if self.ptr and _lib is not None:
            _lib.EVP_CIPHER_CTX_free(self.ptr)
        self.ptr = 0

    def __del__(self) -> None:
        self.free()


@njit(cache=True, nogil=True)
def _seal_one(ctx: int, h: int, src: int, m: int, op: int) -> bool:
    """Seals ``m`` bytes at address ``src`` behind the header at ``h`` (AAD, nonce at 20..32), tag after."""
    body = h + HEADER_BYTES
    if c_enc_init(ctx, 0, 0, 0, h + NONCE_OFFSET) != 1:
        return False
    c_enc_update(ctx, 0, op, h, HEADER_BYTES)
    c_enc_update(ctx, body, op, src, m)
    c_enc_final(ctx, body + m, op)
    c_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GCM_TAG_BYTES, body + m)
    return True


@njit(cache=True, nogil=True)
def seal_batch(ctx: int, stage: Any, plain: Any, lens: Any, n: int, outl: Any) -> int:
    """Encrypts frame i's ``plain[i, :lens[i]]`` into ``stage[i, 32:]`` + tag, the header as AAD and its
    bytes 20..32 as the nonce; ``lens[i]`` becomes the datagram length. Returns frames sealed."""
    slot = stage.shape[1]
    sbase = stage.ctypes.data
    pbase = plain.ctypes.data
    op = outl.ctypes.data
    for i in range(n):
        m = lens[i]
        if not _seal_one(ctx, sbase + i * slot, pbase + i * slot, m, op):
            return i
        lens[i] = m + HEADER_BYTES + GCM_TAG_BYTES
    return n


@njit(cache=True, nogil=True)
def drain_seal(
    ctx: int, rbuf: Any, rbase: int, rcap: int, stage: Any, lens: Any, dests: Any, max_frames: int,
    max_payload: int, large_payload: int, large: Any, node_ids: Any, chash: int, node_id: int, boot_id: int,
    tx_counter: Any, ctr: Any, outl: Any,
) -> int:
    """``frames.tx_drain`` + ``seal_batch`` in one pass, without the plaintext copy: each record is sealed
    straight out of the tx ring into ``stage[k]`` and only then released (the producer cannot overwrite it
    before). Same frames, same drops, counters and large-frame stop; ``lens[k]`` is the datagram length. Returns frames
    sealed, or ``-1 - k`` when EVP refused a nonce after ``k`` frames (OpenSSL state is broken)."""
    k = 0
    room = stage.shape[1] - HEADER_BYTES
    slot = stage.shape[1]
    sbase = stage.ctypes.data
    rptr = rbuf.ctypes.data
    op = outl.ctypes.data
    while k < max_frames:
        hdr, rtype, n = ring_peek(rbuf, rbase, rcap)
        if hdr < 0:
            break  # EMPTY, or CORRUPT (totem's ring is trusted; the next call reports it again)
        d = tx_dest_or_drop(rbuf, rbase, rcap, rtype, n, max_payload, room, large_payload, node_ids, ctr)
        if d == TX_LARGE:
            large[0] = 1
            break
        if d == TX_DROPPED:
            continue
        c = tx_counter[0] + 1
        tx_counter[0] = c
        write_header(stage[k], MODE_AEAD, chash, node_id, boot_id, c)
        if not _seal_one(ctx, sbase + k * slot, rptr + hdr + RECORD_HEADER_BYTES, n, op):
            return -1 - k
        ring_release(rbuf, rbase, rcap, n)
        dests[k] = d
        lens[k] = n + HEADER_BYTES + GCM_TAG_BYTES
        k += 1
    return k


@njit(cache=True, nogil=True)
def _open_one(ctx: int, h: int, dst: int, m: int, op: int) -> bool:
    """Authenticates the datagram at ``h`` (``m`` payload bytes) and decrypts its payload to ``dst``."""
    body = h + HEADER_BYTES
    ok = c_dec_init(ctx, 0, 0, 0, h + NONCE_OFFSET) == 1
    ok = ok and c_dec_update(ctx, 0, op, h, HEADER_BYTES) == 1
    ok = ok and c_dec_update(ctx, dst, op, body, m) == 1
    ok = ok and c_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GCM_TAG_BYTES, body + m) == 1
    return ok and c_dec_final(ctx, dst + m, op) > 0


@njit(cache=True, nogil=True)
def open_batch(
    ctxs: Any, ctx_boot: Any, flat: Any, scratch: Any, seg_off: Any, seg_len: Any, verdict: Any, plain_len: Any,
    nseg: int, outl: Any,
) -> int:
    """Opens every datagram with ``verdict >= 0`` (sender index) into ``scratch`` at its own offset.

    ``plain_len[s]`` = payload length, -1 if the tag is wrong, NEEDS_PYTHON if no context holds the key of
    that sender incarnation (``ctx_boot[i]`` differs from the header's boot id). Returns tags refused.
    """
    fbase = flat.ctypes.data
    obase = scratch.ctypes.data
    op = outl.ctypes.data
    bad = 0
    for s in range(nseg):
        i = verdict[s]
        if i < 0:
            continue
        off = seg_off[s]
        m = seg_len[s] - HEADER_BYTES - GCM_TAG_BYTES
        boot = 0
        for k in range(7, -1, -1):
            boot = (boot << 8) | np.int64(flat[off + 16 + k])
        ctx = ctxs[i]
        if ctx == 0 or boot != ctx_boot[i] or m < 0:
            plain_len[s] = NEEDS_PYTHON if m >= 0 else -1
            if m < 0:
                bad += 1
            continue
        if _open_one(ctx, fbase + off, obase + off, m, op):
            plain_len[s] = m
        else:
            plain_len[s] = -1
            bad += 1
    return bad


@njit(cache=True, nogil=True)
def needs_python(ctxs: Any, ctx_boot: Any, flat: Any, seg_off: Any, seg_len: Any, verdict: Any, nseg: int) -> bool:
    """True when a datagram of the batch comes from a sender incarnation without a context (``open_batch``
    would answer NEEDS_PYTHON for it): such a batch takes the two-step path."""
    for s in range(nseg):
        i = verdict[s]
        if i < 0 or seg_len[s] < HEADER_BYTES + GCM_TAG_BYTES:
            continue
        off = seg_off[s]
        boot = 0
        for k in range(7, -1, -1):
            boot = (boot << 8) | np.int64(flat[off + 16 + k])
        if ctxs[i] == 0 or boot != ctx_boot[i]:
            return True
    return False


@njit(cache=True, nogil=True)
def open_accept(
    ctxs: Any, flat: Any, seg_off: Any, seg_len: Any, verdict: Any, start: int, nseg: int,
    boot: Any, top: Any, bits: Any, link: Any, now_ns: int, rbuf: Any, rbase: int, rcap: int,
    node_ids: Any, ctr: Any, wake: Any, retired: Any, outl: Any,
) -> int:
    """``open_batch`` + ``frames.rx_accept`` in one pass, for a batch where every sender has a context
    (see :func:`needs_python`): each datagram is decrypted straight into a reserved rx ring record, which
    is committed only if the tag is right and the frame is not a replay (no plaintext copy). Same drops,
    counters and order. Returns the first index not handled (rx ring full), like ``rx_accept``."""
    fbase = flat.ctypes.data
    rptr = rbuf.ctypes.data
    op = outl.ctypes.data
    s = start
    pushed = 0
    while s < nseg:
        i = verdict[s]
        if i >= 0:
            off = seg_off[s]
            m = seg_len[s] - HEADER_BYTES - GCM_TAG_BYTES
            ok = m >= 0
            if ok:
                dst = ring_reserve(rbuf, rbase, rcap, m)
                if dst < 0:
                    ctr[C_RX_RING_FULL] += 1
                    break
                ok = _open_one(ctxs[i], fbase + off, rptr + dst + RECORD_HEADER_BYTES, m, op)
            if not ok:
                verdict[s] = -1 - R_BAD_AUTH
                ctr[C_DROP_BASE + R_BAD_AUTH] += 1
            else:
                b = 0
                c = 0
                for k in range(7, -1, -1):
                    b = (b << 8) | np.int64(flat[off + 16 + k])
                    c = (c << 8) | np.int64(flat[off + 24 + k])
                if replay_verdict(boot, top, bits, i, b, c) == REPLAY:
                    verdict[s] = -1 - R_REPLAY
                    ctr[C_DROP_BASE + R_REPLAY] += 1
                else:
                    ring_commit(rbuf, rbase, rcap, int(node_ids[i]), m)
                    pushed += 1
                    note_accepted(boot, top, bits, link, retired, i, b, c, m, now_ns)
        s += 1
    finish_accept(rbuf, rbase, pushed, ctr, wake)
    return s


def warm() -> None:
    """Compiles both kernels (when libcrypto is there) on a frame sealed and opened in place."""
    if not available():
        return
    key = bytes(range(32))
    enc, dec = GcmContext(key, False), GcmContext(key, True)
    slot = 128
    stage = np.zeros((1, slot), np.uint8)
    plain = np.zeros((1, slot), np.uint8)
    lens = np.array([16], np.int64)
    outl = np.zeros(2, np.int32)
    seal_batch(enc.ptr, stage, plain, lens, 1, outl)
    from pycorosync.ipc.ring_kernels import RING_HEADER_BYTES, ring_push

    cap = 4096
    ring = np.zeros(RING_HEADER_BYTES + cap, np.uint8)
    ring_push(ring, 0, cap, 0, np.zeros(16, np.uint8))
    drain_seal(enc.ptr, ring, 0, cap, np.zeros((1, slot), np.uint8), np.zeros(1, np.int64), np.zeros(1, np.int64), 1,
               64, 64, np.zeros(1, np.int64), np.array([1], np.int64), 0, 1, 1, np.zeros(1, np.int64),
               np.zeros(N_COUNTERS, np.int64), outl)
    flat = stage.reshape(-1)
    verdict = np.zeros(1, np.int64)
    plen = np.zeros(1, np.int64)
    ctxs = np.array([dec.ptr], np.int64)
    open_batch(ctxs, np.zeros(1, np.int64), flat, np.zeros_like(flat), np.zeros(1, np.int64), lens, verdict, plen,
               1, outl)
    seg_off = np.zeros(1, np.int64)
    needs_python(ctxs, np.zeros(1, np.int64), flat, seg_off, lens, verdict, 1)
    from pycorosync.transports.peers import PeerState

    peers = PeerState([1])
    link = np.zeros((1, 8), np.int64)
    open_accept(ctxs, flat, seg_off, lens, verdict, 0, 1, peers.boot, peers.top, peers.bits, link, 1, ring, 0, cap,
                np.array([1], np.int64), np.zeros(N_COUNTERS, np.int64), np.zeros(1, np.int64),
                np.zeros(1, np.int64), outl)
    enc.free()
    dec.free()
