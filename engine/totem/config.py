"""Totem timers and limits, with corosync's key names and defaults (COROSYNC.md §2.13)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from pycorosync.engine.totem.wire import HEADER, RTR_MAX, TOKEN_BODY

#: the smallest frame totem can work with: a token with a full retransmit list must fit (320 bytes)
MIN_FRAME_BYTES = max(256, HEADER.size + TOKEN_BODY.size + RTR_MAX * 8)

#: the IP/UDP headroom and crypto trailer a transport needs inside ``netmtu`` (bytes)
DEFAULT_TRANSPORT_OVERHEAD_BYTES = 64
#: corosync's send queue: 4 MiB worth of frames
_SEND_QUEUE_BYTES = 4 * 1024 * 1024
#: what a config reload may change in a running core (corosync's totem reload callback re-reads these);
#: frame and queue sizes stay: the send queue and the transport were built for them
RELOADABLE_FIELDS: tuple[str, ...] = (
    "token", "token_coefficient", "token_retransmits_before_loss_const", "token_retransmit", "hold", "join",
    "merge", "consensus", "fail_recv_const", "fail_recv_ms", "seqno_unchanged_const", "seqno_unchanged_ms",
    "miss_count_const",
    "window_size", "max_messages", "token_warning", "cancel_token_hold_on_retransmit",
)


@dataclass(frozen=True)
class TotemConfig:
    """Totem protocol parameters. Times are in ms, queue lengths in frames, sizes in bytes.

    ``token`` is the *effective* token timeout (corosync's ``runtime.config.totem.token``);
    use :meth:`defaults_for` or :meth:`from_keys` to derive the dependent timers as corosync does.
    """

    token: int = 3000
    token_coefficient: int = 650
    token_retransmits_before_loss_const: int = 4
    token_retransmit: int = 714
    hold: int = 561
    join: int = 50
    merge: int = 200
    consensus: int = 3600
    fail_recv_const: int = 2500
    #: time-based receive-failure detection (COROSYNC.md §12): the token aru stuck on me this long is a
    #: failure to receive even when few rotations passed (an idle ring turns slowly). 0 = token + consensus.
    fail_recv_ms: int = 0
    seqno_unchanged_const: int = 30
    #: pycorosync: the representative also holds the token of a ring idle this long (ms; 0 = only after
    #: seqno_unchanged_const rotations, as corosync). See TotemCore._should_hold.
    seqno_unchanged_ms: int = 2
    miss_count_const: int = 5
    window_size: int = 50
    max_messages: int = 17
    netmtu: int = 1500
    transport_overhead_bytes: int = DEFAULT_TRANSPORT_OVERHEAD_BYTES
    #: send queue bound in frames; 0 = corosync's 4 MiB worth of frames. A single message larger than the
    #: bound (up to max_message_bytes) is still accepted when the queue is empty.
    send_queue_frames: int = 0
    max_message_bytes: int = 16 * 1024 * 1024
    token_warning: int = 75
    cancel_token_hold_on_retransmit: bool = False

    def __post_init__(self) -> None:
        for name in ("token", "token_retransmit", "hold", "join", "merge", "consensus"):
            if getattr(self, name) <= 0:
                raise ValueError(f"totem.{name} must be a positive number of ms, got {getattr(self, name)!r}")
        for name in ("window_size", "max_messages", "fail_recv_const", "seqno_unchanged_const", "miss_count_const",
                     "token_retransmits_before_loss_const"):
            if getattr(self, name) <= 0:
                raise ValueError(f"totem.{name} must be a positive count, got {getattr(self, name)!r}")
        if self.frame_payload_bytes < MIN_FRAME_BYTES:
            raise ValueError(
                f"totem.netmtu {self.netmtu} minus transport overhead {self.transport_overhead_bytes} leaves "
                f"{self.frame_payload_bytes} bytes per frame: at least {MIN_FRAME_BYTES} are needed")
        if not 0 <= self.token_warning <= 100:
            raise ValueError(f"totem.token_warning must be a percentage 0..100, got {self.token_warning!r}")
        if self.max_message_bytes <= 0:
            raise ValueError(f"totem max_message_bytes must be positive, got {self.max_message_bytes!r}")

    @property
    def fail_recv_limit_ms(self) -> int:
        """The time-based receive-failure limit actually applied (see ``fail_recv_ms``)."""
        return self.fail_recv_ms if self.fail_recv_ms > 0 else self.token + self.consensus

    @property
    def frame_payload_bytes(self) -> int:
        """Bytes of one Totem frame (header included) the transport can carry."""
        return self.netmtu - self.transport_overhead_bytes

    @property
    def send_queue_limit_frames(self) -> int:
        """The send queue bound actually applied (see ``send_queue_frames``)."""
        if self.send_queue_frames > 0:
            return self.send_queue_frames
        return max(1, _SEND_QUEUE_BYTES // self.netmtu)

    def reloaded(self, new: TotemConfig) -> TotemConfig:
        """This config with the run-time changeable values (``RELOADABLE_FIELDS``) taken from ``new``."""
        return replace(self, **{name: getattr(new, name) for name in RELOADABLE_FIELDS})

    def changes(self, new: TotemConfig) -> list[tuple[str, object, object]]:
        """(field, old, new) for every reloadable value that differs in ``new``, in field order."""
        return [(name, getattr(self, name), getattr(new, name)) for name in RELOADABLE_FIELDS
                if getattr(self, name) != getattr(new, name)]

    @classmethod
    def defaults_for(cls, token: int = 3000, node_count: int = 2, token_coefficient: int = 650,
                     **overrides: object) -> TotemConfig:
        """Corosync's derived defaults for a base ``token`` and a nodelist of ``node_count`` nodes."""
        effective = token + max(0, node_count - 2) * token_coefficient if node_count >= 3 else token
        const = int(overrides.get("token_retransmits_before_loss_const", 4))  # type: ignore[call-overload]
        retransmit = max(1, int(effective / (const + 0.2)))
        values: dict[str, object] = {
            "token": effective,
            "token_coefficient": token_coefficient,
            "token_retransmit": retransmit,
            "hold": max(1, int(retransmit * 0.8 - 10)),
            "consensus": int(1.2 * effective),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @classmethod
    def from_keys(cls, flat: Mapping[str, object]) -> TotemConfig:
        """Build from flat config keys: ``runtime.config.totem.X`` wins over ``totem.X``; the rest are defaults.

        Values are expected already computed by the config parser (effective token, derived timers).
        A timer missing from both is derived from the token as corosync does.
        """
        known = {f.name: f for f in fields(cls)}
        values: dict[str, object] = {}
        for name, spec in known.items():
            raw = flat.get(f"runtime.config.totem.{name}", flat.get(f"totem.{name}"))
            if raw is None:
                continue
            try:
                if spec.type in ("bool", bool):
                    values[name] = raw if isinstance(raw, bool) else str(raw).lower() in ("yes", "on", "true", "1")
                else:
                    values[name] = int(raw)  # type: ignore[call-overload]
            except (TypeError, ValueError) as exc:
                raise ValueError(f"totem.{name} must be an integer, got {raw!r}") from exc
        token = int(values.get("token", 3000))  # type: ignore[call-overload]
        const = int(values.get("token_retransmits_before_loss_const", 4))  # type: ignore[call-overload]
        values.setdefault("token", token)
        values.setdefault("token_retransmit", max(1, int(token / (const + 0.2))))
        retransmit = int(values["token_retransmit"])  # type: ignore[call-overload]
        values.setdefault("hold", max(1, int(retransmit * 0.8 - 10)))
        values.setdefault("consensus", int(1.2 * token))
        return cls(**values)  # type: ignore[arg-type]
