"""SAM's constants and the pipe protocol between a supervised child and its supervisor.

The recovery policy values are corosync's (``sam.h``). The child talks to its supervisor over two
pipes, as corosync's libsam does: commands child -> parent, replies parent -> child.

Command frame (child -> parent), little endian::

    u8 command                      START, STOP, HB, MARK_FAILED: nothing follows
    u8 DATA_STORE  u64 size  bytes  the blob (size 0 = forget it)
    u8 WARN_SIGNAL_SET  i32 signal

Reply (parent -> child) to START, STOP, DATA_STORE, WARN_SIGNAL_SET: ``u8 0`` (OK), or ``u8 1  i32
cs_error``. HB and MARK_FAILED get none. Unlike corosync, START is always answered, so that when
``start()`` returns the supervisor already counts the child as started.

``pycorosync sam run`` gives the program only the write end of the command pipe, in ``$SAM_HC_FD``, and
reads it raw: every read is one heartbeat, whatever the bytes are.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

SAM_RECOVERY_POLICY_QUIT = 1
SAM_RECOVERY_POLICY_RESTART = 2
SAM_RECOVERY_POLICY_QUORUM = 0x08
SAM_RECOVERY_POLICY_QUORUM_QUIT = SAM_RECOVERY_POLICY_QUORUM | SAM_RECOVERY_POLICY_QUIT
SAM_RECOVERY_POLICY_QUORUM_RESTART = SAM_RECOVERY_POLICY_QUORUM | SAM_RECOVERY_POLICY_RESTART
SAM_RECOVERY_POLICY_CMAP = 0x10
SAM_RECOVERY_POLICY_CONFDB = SAM_RECOVERY_POLICY_CMAP  # the old name, kept by corosync

_FLAGS = SAM_RECOVERY_POLICY_QUORUM | SAM_RECOVERY_POLICY_CMAP

MAX_DATA_BYTES = 64 << 20  # a blob the supervisor keeps in memory; larger stores get CS_ERR_TOO_BIG
HC_FD_ENV = "SAM_HC_FD"
INSTANCE_ID_ENV = "SAM_INSTANCE_ID"


def base_policy(recovery_policy: int) -> int:
    """QUIT or RESTART without the QUORUM/CMAP flags (corosync's ``SAM_RP_MASK``)."""
    return recovery_policy & ~_FLAGS


def valid_policy(recovery_policy: int) -> bool:
    """True for QUIT or RESTART, with any of the QUORUM and CMAP flags and nothing else."""
    return recovery_policy & ~(_FLAGS | 3) == 0 and base_policy(recovery_policy) in (
        SAM_RECOVERY_POLICY_QUIT,
        SAM_RECOVERY_POLICY_RESTART,
    )


def policy_name(recovery_policy: int) -> str:
    """``quit`` or ``restart``: the value of ``resources.process.<pid>.recovery``."""
    return "restart" if base_policy(recovery_policy) == SAM_RECOVERY_POLICY_RESTART else "quit"


class Command(enum.IntEnum):
    """What a child says to its supervisor (corosync's ``sam_command_t`` values)."""

    START = 0
    STOP = 1
    HB = 2
    DATA_STORE = 3
    WARN_SIGNAL_SET = 4
    MARK_FAILED = 5


REPLY_OK = 0
REPLY_ERROR = 1
_U64 = struct.Struct("<Q")
_I32 = struct.Struct("<i")


def encode(command: Command, data: bytes | None = None, signum: int = 0) -> bytes:
    """The bytes of one command frame."""
    if command is Command.DATA_STORE:
        blob = data or b""
        return bytes((command,)) + _U64.pack(len(blob)) + blob
    if command is Command.WARN_SIGNAL_SET:
        return bytes((command,)) + _I32.pack(signum)
    return bytes((command,))


def encode_reply(code: int) -> bytes:
    """``OK`` for CS_OK (1), else the error reply carrying ``code``."""
    return bytes((REPLY_OK,)) if code == 1 else bytes((REPLY_ERROR,)) + _I32.pack(code)


@dataclass(frozen=True)
class Received:
    """One complete command from a child; ``data`` for DATA_STORE, ``signum`` for WARN_SIGNAL_SET.

    ``too_big`` marks a DATA_STORE whose blob exceeded ``MAX_DATA_BYTES``: its bytes were skipped.
    """

    command: Command
    data: bytes = b""
    signum: int = 0
    too_big: bool = False


class CommandReader:
    """Turns the bytes of a command pipe, in any split, into ``Received`` commands.

    A byte that is not a command is counted in ``malformed`` and dropped (the child's own bug must
    not take its supervisor down); the stream stays in step because every command is self-delimiting.
    """

    def __init__(self, max_data_bytes: int = MAX_DATA_BYTES) -> None:
        self.max_data_bytes = max_data_bytes
        self.malformed = 0
        self._buf = bytearray()
        self._skip = 0  # bytes of an over-limit blob still to discard

    def feed(self, chunk: bytes) -> list[Received]:
        """Adds ``chunk`` and returns every command it completed, in order."""
        self._buf += chunk
        out: list[Received] = []
        while True:
            if self._skip:
                n = min(self._skip, len(self._buf))
                del self._buf[:n]
                self._skip -= n
                if self._skip:
                    return out
            if not self._buf:
                return out
            code = self._buf[0]
            if code > max(Command):
                self.malformed += 1
                del self._buf[:1]
                continue
            command = Command(code)
            if command is Command.DATA_STORE:
                if len(self._buf) < 1 + _U64.size:
                    return out
                (size,) = _U64.unpack_from(self._buf, 1)
                if size > self.max_data_bytes:
                    del self._buf[: 1 + _U64.size]
                    self._skip = size
                    out.append(Received(command, too_big=True))
                    continue
                end = 1 + _U64.size + size
                if len(self._buf) < end:
                    return out
                out.append(Received(command, data=bytes(self._buf[1 + _U64.size : end])))
                del self._buf[:end]
            elif command is Command.WARN_SIGNAL_SET:
                if len(self._buf) < 1 + _I32.size:
                    return out
                (signum,) = _I32.unpack_from(self._buf, 1)
                out.append(Received(command, signum=signum))
                del self._buf[: 1 + _I32.size]
            else:
                out.append(Received(command))
                del self._buf[:1]


def decode_reply(head: bytes) -> int:
    """The cs_error of a reply whose first byte(s) are ``head`` (1 = CS_OK, 2 = CS_ERR_LIBRARY if garbled)."""
    if head[:1] == bytes((REPLY_OK,)):
        return 1
    if head[:1] == bytes((REPLY_ERROR,)) and len(head) >= 1 + _I32.size:
        return int(_I32.unpack_from(head, 1)[0])
    return 2


REPLY_ERROR_BYTES = 1 + _I32.size
