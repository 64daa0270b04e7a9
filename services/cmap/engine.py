"""The cmap key store (icmap): typed keys, read-only rules, sorted iteration, change tracking.

Pure: no I/O, no clock. The service process (``server.py``) owns one ``Icmap`` and one
``StatsMap`` and maps client requests onto them; tests drive them directly.

Semantics follow corosync's icmap/cmap (COROSYNC.md §7.1): key names are 3..255 characters of
``[A-Za-z0-9._/:-]``; setting an identical value (same type and value) is a no-op that notifies
nobody; a set may change a key's type; ``inc``/``dec`` work on integer keys only and wrap within
the type; iteration is by prefix in sorted order; trackers fire on add/delete/modify of an exact
key or of every key under a prefix, with the new and the old value.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pycorosync.engine.config.types import INTEGER_RANGES, Value, ValueType
from pycorosync.ipc.errors import CsError, CsErrorCode

# track flags (cmap.h CMAP_TRACK_*)
CMAP_TRACK_DELETE = 1
CMAP_TRACK_MODIFY = 2
CMAP_TRACK_ADD = 4
CMAP_TRACK_PREFIX = 8
_TRACK_EVENTS = CMAP_TRACK_ADD | CMAP_TRACK_DELETE | CMAP_TRACK_MODIFY

KEYNAME_MINLEN = 3
KEYNAME_MAXLEN = 255
# a notification carries a new and an old value in one record of at most half a 1 MiB ring
MAX_VALUE_BYTES = 256 * 1024 - 4096
# bounds per owner (client connection): a client cannot grow the service without limit
MAX_ITERATORS_PER_OWNER = 256
MAX_TRACKS_PER_OWNER = 4096

_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/:-")

# client writes to these are refused with CS_ERR_ACCESS (corosync's icmap_set_ro_access list)
READ_ONLY_PREFIXES: tuple[str, ...] = (
    "internal_configuration.",
    "runtime.services.",
    "runtime.config.",
    "runtime.totem.",
    "uidgid.config.",
    "system.",
    "nodelist.",
)
READ_ONLY_KEYS: frozenset[str] = frozenset(
    [f"totem.{k}" for k in (
        "crypto_cipher", "crypto_hash", "crypto_model", "keyfile", "key", "secauth", "ip_version", "ip_dscp",
        "transport", "cluster_name", "netmtu", "threads", "version", "nodeid", "clear_node_high_bit",
    )]
    + ["config.reload_in_progress", "config.totemconfig_reload_in_progress", "nodelist.local_node_pos"]
    + [f"quorum.{k}" for k in (
        "allow_downscale", "wait_for_all", "last_man_standing", "last_man_standing_window",
        "expected_votes_tracking",
    )]
)

Entry = tuple[ValueType, Value]


def is_read_only(key: str) -> bool:
    """True when a client may not set, delete, inc or dec ``key`` (the engine itself still may)."""
    return key in READ_ONLY_KEYS or key.startswith(READ_ONLY_PREFIXES)


def check_key_name(key: str) -> None:
    """Raises CS_ERR_NAME_TOO_LONG for a name corosync would refuse (length or character set)."""
    if not KEYNAME_MINLEN <= len(key) <= KEYNAME_MAXLEN:
        raise CsError(CsErrorCode.CS_ERR_NAME_TOO_LONG, f"cmap key name must be 3..255 characters, got {len(key)}")
    if not _KEY_CHARS.issuperset(key):
        raise CsError(CsErrorCode.CS_ERR_NAME_TOO_LONG, f"cmap key name {key!r} has characters outside [A-Za-z0-9._/:-]")


def _f32(value: float) -> float:
    """Rounds to the nearest float32 as a C float would store it; out of range is refused."""
    try:
        out: float = struct.unpack("<f", struct.pack("<f", value))[0]
    except (OverflowError, struct.error) as exc:
        raise CsError(CsErrorCode.CS_ERR_INVALID_PARAM, f"{value!r} does not fit a float") from exc
    return out


def normalize_value(vtype: ValueType | int, value: object) -> Entry:
    """Checks ``value`` against ``vtype`` (range, Python type, size) and returns the stored form.

    Integers must be ``int`` within the type's range, FLOAT/DOUBLE accept int or float (FLOAT is
    rounded to float32), STRING takes ``str`` without NUL, BINARY takes bytes-like.
    """
    try:
        vt = ValueType(vtype)
    except ValueError as exc:
        raise CsError(CsErrorCode.CS_ERR_INVALID_PARAM, f"unknown cmap value type {vtype!r}") from exc
    bounds = INTEGER_RANGES.get(vt)
    if bounds is not None:
        if not isinstance(value, int):
            raise CsError(CsErrorCode.CS_ERR_INVALID_PARAM, f"{vt.name} value must be an integer, got {value!r}")
        if not bounds[0] <= value <= bounds[1]:
            raise CsError(CsErrorCode.CS_ERR_INVALID_PARAM, f"{value} is outside the range of {vt.name}")
        return vt, int(value)
    if vt in (ValueType.FLOAT, ValueType.DOUBLE):
        if not isinstance(value, (int, float)):
            raise CsError(CsErrorCode.CS_ERR_INVALID_PARAM, f"{vt.name} value must be a number, got {value!r}")
        return vt, _f32(float(value)) if vt == ValueType.FLOAT else float(value)
    if vt == ValueType.STRING:
        if not isinstance(value, str) or "\0" in value:
            raise CsError(CsErrorCode.CS_ERR_INVALID_PARAM, f"STRING value must be a str without NUL, got {value!r:.60}")
        if len(value) > MAX_VALUE_BYTES // 4 and len(value.encode("utf-8", "surrogateescape")) > MAX_VALUE_BYTES:
            raise CsError(CsErrorCode.CS_ERR_TOO_BIG, f"value larger than {MAX_VALUE_BYTES} bytes")
        return vt, value
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise CsError(CsErrorCode.CS_ERR_INVALID_PARAM, f"BINARY value must be bytes, got {value!r:.60}")
    data = bytes(value)
    if len(data) > MAX_VALUE_BYTES:
        raise CsError(CsErrorCode.CS_ERR_TOO_BIG, f"value larger than {MAX_VALUE_BYTES} bytes")
    return vt, data


def _same(a: Entry, b: Entry) -> bool:
    """corosync compares type and value bytes: floats by bit pattern (-0.0 differs from 0.0, a NaN equals itself)."""
    if a[0] != b[0] or type(a[1]) is not type(b[1]):
        return False
    if isinstance(a[1], float):
        return struct.pack("<d", a[1]) == struct.pack("<d", b[1])
    return a[1] == b[1]


@dataclass(frozen=True)
class CmapNotification:
    """One tracked change: ``event`` is CMAP_TRACK_ADD, _DELETE or _MODIFY.

    ``new``/``old`` are ``(type, value)`` or None when that side does not exist (type 0 on the wire).
    """

    track_handle: int
    event: int
    key: str
    new: Entry | None
    old: Entry | None


NotificationSink = Callable[[CmapNotification], None]


@dataclass
class _Track:
    handle: int
    key: str
    flags: int
    sink: NotificationSink
    owner: object


class TrackRegistry:
    """Trackers of one map: exact-key and prefix trackers, bounded per owner."""

    def __init__(self) -> None:
        self._next_handle = 1
        self._by_handle: dict[int, _Track] = {}
        self._exact: dict[str, list[_Track]] = {}
        self._prefix: list[_Track] = []
        self._per_owner: dict[object, int] = {}

    def add(self, key: str, flags: int, sink: NotificationSink, owner: object = None) -> int:
        """Registers a tracker; returns its handle. Bad flags → CS_ERR_INVALID_PARAM."""
        if flags & ~(_TRACK_EVENTS | CMAP_TRACK_PREFIX) or not flags & _TRACK_EVENTS:
            raise CsError(CsErrorCode.CS_ERR_INVALID_PARAM, f"bad cmap track flags 0x{flags:x}")
        if len(key) > KEYNAME_MAXLEN:
            raise CsError(CsErrorCode.CS_ERR_NAME_TOO_LONG, "tracked key name longer than 255 characters")
        if self._per_owner.get(owner, 0) >= MAX_TRACKS_PER_OWNER:
            raise CsError(CsErrorCode.CS_ERR_NO_RESOURCES, f"more than {MAX_TRACKS_PER_OWNER} trackers on one handle")
        handle = self._next_handle
        self._next_handle += 1
        track = _Track(handle, key, flags, sink, owner)
        self._by_handle[handle] = track
        if flags & CMAP_TRACK_PREFIX:
            self._prefix.append(track)
        else:
            self._exact.setdefault(key, []).append(track)
        self._per_owner[owner] = self._per_owner.get(owner, 0) + 1
        return handle

    def delete(self, handle: int, owner: object = None) -> None:
        """Removes a tracker; unknown handle (or another owner's) → CS_ERR_NOT_EXIST."""
        track = self._by_handle.get(handle)
        if track is None or track.owner is not owner:
            raise CsError(CsErrorCode.CS_ERR_NOT_EXIST, f"no cmap track handle {handle}")
        self._remove(track)

    def drop_owner(self, owner: object) -> None:
        """Forgets every tracker of ``owner`` (its connection went away)."""
        for track in [t for t in self._by_handle.values() if t.owner is owner]:
            self._remove(track)

    def _remove(self, track: _Track) -> None:
        del self._by_handle[track.handle]
        if track.flags & CMAP_TRACK_PREFIX:
            self._prefix.remove(track)
        else:
            same = self._exact[track.key]
            same.remove(track)
            if not same:
                del self._exact[track.key]
        left = self._per_owner[track.owner] - 1
        if left:
            self._per_owner[track.owner] = left
        else:
            del self._per_owner[track.owner]

    def __bool__(self) -> bool:
        return bool(self._by_handle)

    def prefix_tracks(self) -> list[tuple[str, int]]:
        """(prefix, flags) of every prefix tracker (the stats map polls what they cover)."""
        return [(t.key, t.flags) for t in self._prefix]

    def exact_keys(self) -> list[str]:
        """Keys tracked exactly."""
        return list(self._exact)

    def notify(
        self, event: int, key: str, new: Entry | None, old: Entry | None, *, exact: bool = True, prefix: bool = True
    ) -> None:
        """Calls the sink of every exact (and/or prefix) tracker interested in ``event`` on ``key``."""
        hits: list[_Track] = []
        if exact:
            hits.extend(t for t in self._exact.get(key, ()) if t.flags & event)
        if prefix:
            hits.extend(t for t in self._prefix if t.flags & event and key.startswith(t.key))
        for t in hits:
            t.sink(CmapNotification(t.handle, event, key, new, old))


class IteratorTable:
    """Iterator handles: each remembers its prefix and the last key returned.

    Walking by "next key after the last one" keeps an iterator valid while keys come and go,
    as corosync's trie iterator does.
    """

    def __init__(self) -> None:
        self._next_handle = 1
        self._iters: dict[int, tuple[str, str | None, object]] = {}
        self._per_owner: dict[object, int] = {}

    def open(self, prefix: str, owner: object = None) -> int:
        """A new iterator over keys starting with ``prefix``; returns its handle."""
        if len(prefix) > KEYNAME_MAXLEN:
            raise CsError(CsErrorCode.CS_ERR_NAME_TOO_LONG, "iteration prefix longer than 255 characters")
        if self._per_owner.get(owner, 0) >= MAX_ITERATORS_PER_OWNER:
            raise CsError(CsErrorCode.CS_ERR_NO_RESOURCES, f"more than {MAX_ITERATORS_PER_OWNER} open iterators")
        handle = self._next_handle
        self._next_handle += 1
        self._iters[handle] = (prefix, None, owner)
        self._per_owner[owner] = self._per_owner.get(owner, 0) + 1
        return handle

    def position(self, handle: int, owner: object = None) -> tuple[str, str | None]:
        """(prefix, last key returned) of an iterator; unknown handle → CS_ERR_BAD_HANDLE."""
        it = self._iters.get(handle)
        if it is None or it[2] is not owner:
            raise CsError(CsErrorCode.CS_ERR_BAD_HANDLE, f"no cmap iterator handle {handle}")
        return it[0], it[1]

    def advance(self, handle: int, key: str) -> None:
        prefix, _, owner = self._iters[handle]
        self._iters[handle] = (prefix, key, owner)

    def close(self, handle: int, owner: object = None) -> None:
        """Finalizes an iterator; unknown handle → CS_ERR_BAD_HANDLE."""
        self.position(handle, owner)
        del self._iters[handle]
        self._release(owner)

    def drop_owner(self, owner: object) -> None:
        """Forgets every iterator of ``owner``."""
        for handle in [h for h, it in self._iters.items() if it[2] is owner]:
            del self._iters[handle]
            self._release(owner)

    def _release(self, owner: object) -> None:
        left = self._per_owner[owner] - 1
        if left:
            self._per_owner[owner] = left
        else:
            del self._per_owner[owner]


class Icmap:
    """The default cmap map: a sorted typed key-value store with trackers.

    Client-facing calls pass ``internal=False`` and get corosync's access rules; the engine's own
    writes (config load, runtime keys, reload) pass ``internal=True``.
    """

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._sorted: list[str] = []
        self.tracks = TrackRegistry()
        self.iterators = IteratorTable()

    # -- reads -------------------------------------------------------------------------------
    def get(self, key: str) -> Entry:
        """(type, value) of ``key``; missing → CS_ERR_NOT_EXIST."""
        entry = self._entries.get(key)
        if entry is None:
            raise CsError(CsErrorCode.CS_ERR_NOT_EXIST, f"cmap key {key!r} does not exist")
        return entry

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def items(self, prefix: str = "") -> Iterable[tuple[str, Entry]]:
        """(key, (type, value)) under ``prefix``, sorted by key (a snapshot)."""
        start = bisect.bisect_left(self._sorted, prefix)
        out = []
        for key in self._sorted[start:]:
            if not key.startswith(prefix):
                break
            out.append((key, self._entries[key]))
        return out

    def next_key(self, prefix: str, after: str | None) -> str | None:
        """The first key under ``prefix`` sorting after ``after`` (None: from the start)."""
        i = bisect.bisect_left(self._sorted, prefix) if after is None else bisect.bisect_right(self._sorted, after)
        if i < len(self._sorted) and self._sorted[i].startswith(prefix):
            return self._sorted[i]
        return None

    def iter_next(self, handle: int, owner: object = None) -> tuple[str, Entry]:
        """The next (key, entry) of an iterator; past the end → CS_ERR_NO_SECTIONS."""
        prefix, last = self.iterators.position(handle, owner)
        key = self.next_key(prefix, last)
        if key is None:
            raise CsError(CsErrorCode.CS_ERR_NO_SECTIONS, "end of cmap iteration")
        self.iterators.advance(handle, key)
        return key, self._entries[key]

    # -- writes ------------------------------------------------------------------------------
    def _check_write(self, key: str, internal: bool) -> None:
        # corosync's cmap service checks access first; names are checked only for keys being created
        if not internal and is_read_only(key):
            raise CsError(CsErrorCode.CS_ERR_ACCESS, f"cmap key {key!r} is read-only")

    def set(self, key: str, vtype: ValueType | int, value: object, *, internal: bool = False) -> bool:
        """Creates or replaces ``key``; returns False when it already held this exact value (no-op)."""
        self._check_write(key, internal)
        entry = normalize_value(vtype, value)
        if key not in self._entries:
            check_key_name(key)
        return self._store(key, entry)

    def _store(self, key: str, entry: Entry) -> bool:
        old = self._entries.get(key)
        if old is not None and _same(old, entry):
            return False
        self._entries[key] = entry
        if old is None:
            bisect.insort(self._sorted, key)
        if self.tracks:
            if old is None:
                self.tracks.notify(CMAP_TRACK_ADD, key, entry, None)
            else:
                self.tracks.notify(CMAP_TRACK_MODIFY, key, entry, old)
        return True

    def delete(self, key: str, *, internal: bool = False) -> None:
        """Removes ``key``; missing → CS_ERR_NOT_EXIST."""
        self._check_write(key, internal)
        old = self._entries.pop(key, None)
        if old is None:
            raise CsError(CsErrorCode.CS_ERR_NOT_EXIST, f"cmap key {key!r} does not exist")
        del self._sorted[bisect.bisect_left(self._sorted, key)]
        if self.tracks:
            self.tracks.notify(CMAP_TRACK_DELETE, key, None, old)

    def delete_prefix(self, prefix: str, *, internal: bool = False) -> int:
        """Deletes every key under ``prefix`` that this caller may delete; returns how many."""
        count = 0
        for key, _ in self.items(prefix):
            if internal or not is_read_only(key):
                self.delete(key, internal=internal)
                count += 1
        return count

    def add_delta(self, key: str, delta: int, *, internal: bool = False) -> Entry:
        """inc (+1) / dec (-1): integer keys only, wrapping within the type; returns the new entry."""
        self._check_write(key, internal)
        old = self.get(key)
        bounds = INTEGER_RANGES.get(old[0])
        if bounds is None:
            raise CsError(CsErrorCode.CS_ERR_INVALID_PARAM, f"cmap key {key!r} is {old[0].name}, not an integer")
        lo, hi = bounds
        assert isinstance(old[1], int)
        new: Entry = (old[0], (old[1] + delta - lo) % (hi - lo + 1) + lo)
        self._store(key, new)
        return new

    def inc(self, key: str, *, internal: bool = False) -> Entry:
        """cmap_inc."""
        return self.add_delta(key, 1, internal=internal)

    def dec(self, key: str, *, internal: bool = False) -> Entry:
        """cmap_dec."""
        return self.add_delta(key, -1, internal=internal)

    # -- tracking ----------------------------------------------------------------------------
    def track_add(self, key: str, flags: int, sink: NotificationSink, owner: object = None) -> int:
        """cmap_track_add: ``sink`` gets a CmapNotification per matching change; returns the handle."""
        return self.tracks.add(key, flags, sink, owner)

    def track_delete(self, handle: int, owner: object = None) -> None:
        """cmap_track_delete."""
        self.tracks.delete(handle, owner)

    def drop_owner(self, owner: object) -> None:
        """Releases the iterators and trackers of a client that went away."""
        self.tracks.drop_owner(owner)
        self.iterators.drop_owner(owner)
