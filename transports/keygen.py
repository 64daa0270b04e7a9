"""``pycorosync keygen``: corosync-keygen — writes a cluster authkey (COROSYNC.md §10.5).

Prints corosync-keygen's lines, reads the key from ``-r`` (default /dev/urandom), creates the file 0600
(never wider, whatever the umask), writes it, then makes it 0400. Copy the file to every node.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

DEFAULT_KEYFILE = "/etc/corosync/authkey"
DEFAULT_RANDOM = "/dev/urandom"
DEFAULT_BYTES = 256
MIN_BYTES = 128
MAX_BYTES = 4096


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("keygen", help="generate the cluster authentication key (like corosync-keygen)")
    p.add_argument("-k", dest="keyfile", metavar="FILE", default=DEFAULT_KEYFILE,
                   help=f"key file to write (default {DEFAULT_KEYFILE})")
    p.add_argument("-r", dest="random_device", metavar="DEV", default=DEFAULT_RANDOM,
                   help=f"random source (default {DEFAULT_RANDOM})")
    p.add_argument("-s", dest="size", metavar="BYTES", default=DEFAULT_BYTES,
                   help=f"key size in bytes, {MIN_BYTES}..{MAX_BYTES} (default {DEFAULT_BYTES})")
    p.add_argument("-l", dest="less_secure", action="store_true", help="ignored (kept for compatibility)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Handler: returns the exit status (1 on any error, with corosync-keygen's style of message)."""
    try:
        size = int(args.size)
    except ValueError:
        print(f"Error: Key size '{args.size}' is not a number", file=sys.stderr)
        return 1
    if not MIN_BYTES <= size <= MAX_BYTES:
        print(f"Error: Key size must be in range {MIN_BYTES}..{MAX_BYTES} bytes", file=sys.stderr)
        return 1
    print("Corosync Cluster Engine Authentication key generator.")
    print(f"Gathering {size * 8} bits for key from {args.random_device}.")
    sys.stdout.flush()
    try:
        key = _read_random(args.random_device, size)
    except OSError as exc:
        print(f"Error: Can't read random data from {args.random_device}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"Writing corosync key to {args.keyfile}.")
    sys.stdout.flush()
    try:
        write_key(args.keyfile, key)
    except OSError as exc:
        print(f"Error: Could not write key file {args.keyfile}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def _read_random(path: str, size: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        out = b""
        while len(out) < size:
            chunk = os.read(fd, size - len(out))
            if not chunk:
                raise OSError(0, f"only {len(out)} of {size} bytes available")
            out += chunk
        return out
    finally:
        os.close(fd)


def write_key(path: str, key: bytes) -> None:
    """Creates (or replaces) ``path`` with mode 0600, writes ``key``, then sets 0400."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a previous key is 0400: replace it, do not try to open it for writing
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(key)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
        os.fchmod(fd, 0o400)
    finally:
        os.close(fd)
