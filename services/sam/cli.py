"""``pycorosync sam run``: supervise any program with SAM's recovery policies.

    pycorosync sam run [--interval MS] [--policy restart|quit|quorum] [--max-restarts N/SECONDS]
                       [--max-rss BYTES] [--max-cpu PERCENT] [--cmap] [--warn-signal SIG] -- CMD ...

Health is "alive", and, once the program has written its first byte to the file descriptor in
``$SAM_HC_FD``, a write at least every ``--interval`` ms (``echo >&$SAM_HC_FD`` in a shell script).
A failed health check (or ``--max-rss``/``--max-cpu`` broken) sends the warn signal, then SIGKILL one
interval later. A death with a non-zero status or by a signal is recovered per ``--policy``; exit
status 0 ends supervision with 0. More than ``--max-restarts`` restarts in the window give up: exit 1
(or the program's last non-zero status). ``$SAM_INSTANCE_ID`` is 1, then 2, 3 ... per restart.
SIGTERM/SIGINT/SIGHUP are passed to the program; then ``sam run`` exits with its status.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

POLICIES = ("restart", "quit", "quorum", "quorum-restart", "quorum-quit")
_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds ``sam`` (with ``sam run``) to the ``pycorosync`` command line."""
    sam = sub.add_parser("sam", help="Simple Availability Manager: supervise and restart a program",
                         description="SAM: run a program under a supervisor that restarts it per policy.")
    sam_sub = sam.add_subparsers(dest="sam_command", metavar="COMMAND")
    sam.set_defaults(func=lambda _args: _usage(sam))
    run_p = sam_sub.add_parser("run", help="supervise CMD", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    run_p.add_argument("--interval", type=int, default=1000, metavar="MS",
                       help="health-check interval once the program sends heartbeats (0 = alive only; default 1000)")
    run_p.add_argument("--policy", choices=POLICIES, default="restart",
                       help="recovery policy (quorum = restart, and run only while the node is quorate)")
    run_p.add_argument("--max-restarts", default="5/60", metavar="N/SECONDS",
                       help="restart-storm limit: at most N restarts within SECONDS (default 5/60)")
    run_p.add_argument("--max-rss", metavar="BYTES", help="RSS limit (K, M, G suffixes); over it = failed health check")
    run_p.add_argument("--max-cpu", type=float, metavar="PERCENT", help="CPU limit in %% of one core per sample")
    run_p.add_argument("--sample-period", type=int, default=1000, metavar="MS", help="resource sampling (default 1000)")
    run_p.add_argument("--warn-signal", default="TERM", metavar="SIG", help="first signal on failure (default TERM)")
    run_p.add_argument("--kill-after", type=int, metavar="MS", help="warn signal to SIGKILL (default: the interval)")
    run_p.add_argument("--cmap", action="store_true", help="publish resources.process.<pid>.* in the node's cmap")
    run_p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    run_p.set_defaults(func=run)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 1


def parse_bytes(text: str) -> int:
    """``512M`` -> 536870912; ValueError that quotes ``text`` otherwise."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in _SUFFIXES and value[-1:] else ""
    number = value[: len(value) - len(unit)]
    try:
        amount = float(number) * _SUFFIXES[unit]
    except ValueError:
        raise ValueError(f"--max-rss must be a byte count such as 500M, got {text!r}") from None
    if amount <= 0:
        raise ValueError(f"--max-rss must be positive, got {text!r}")
    return int(amount)


def parse_signal(text: str) -> int:
    """``TERM``, ``SIGTERM`` or ``15`` -> 15."""
    name = text.strip().upper()
    if name.isdigit():
        number = int(name)
        if 0 < number < signal.NSIG:
            return number
    else:
        try:
            return int(signal.Signals["SIG" + name.removeprefix("SIG")])
        except KeyError:
            pass
    raise ValueError(f"--warn-signal: unknown signal {text!r}")


def _recovery_policy(name: str, cmap: bool) -> int:
    from pycorosync.services.sam import protocol as sp

    base = sp.SAM_RECOVERY_POLICY_QUIT if name.endswith("quit") else sp.SAM_RECOVERY_POLICY_RESTART
    flags = (sp.SAM_RECOVERY_POLICY_QUORUM if name.startswith("quorum") else 0) | (
        sp.SAM_RECOVERY_POLICY_CMAP if cmap else 0)
    return base | flags


def run(args: argparse.Namespace) -> int:
    """The handler of ``pycorosync sam run``; returns the exit status."""
    from pycorosync.engine.supervisor.policy import RestartPolicy
    from pycorosync.ipc.errors import CsError
    from pycorosync.paths import resolve_run_dir
    from pycorosync.services.sam.resources import ResourceLimits
    from pycorosync.services.sam.settings import SamSettings
    from pycorosync.services.sam.supervisor import SamSupervisor, reserve_hc_fd_slot

    hc_fd_slot = reserve_hc_fd_slot()  # before any connection takes the low numbers
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("pycorosync sam run: no command given (usage: pycorosync sam run [options] -- CMD ...)",
              file=sys.stderr)
        return 1
    try:
        if args.interval < 0:
            raise ValueError(f"--interval must be >= 0 ms, got {args.interval}")
        restart_policy = RestartPolicy.parse_limit(args.max_restarts, backoff_initial_s=0.0, backoff_max_s=0.0)
        limits = ResourceLimits(None if args.max_rss is None else parse_bytes(args.max_rss), args.max_cpu)
        warn_signal = parse_signal(args.warn_signal)
        settings = SamSettings(
            interval_ms=args.interval,
            recovery_policy=_recovery_policy(args.policy, args.cmap),
            restart_policy=restart_policy,
            limits=limits,
            kill_grace_ms=args.kill_after,
            sample_period_ms=args.sample_period,
            name=_name_of(command[0]),
        )
    except (ValueError, CsError) as exc:
        print(f"pycorosync sam run: {exc}", file=sys.stderr)
        return 1
    run_dir = str(resolve_run_dir(args.run_dir)) if settings.cmap or settings.quorum else None
    quorum = cmap = None
    stage = "--policy " + args.policy
    try:
        if settings.quorum:
            from pycorosync.services.sam.quorumsource import ClientQuorumSource

            quorum = ClientQuorumSource(run_dir)
        if settings.cmap:
            from pycorosync.services.sam.cmapstate import SamCmapKeys

            stage = "--cmap"
            cmap = SamCmapKeys(run_dir, os.getpid())
    except CsError as exc:
        print(f"pycorosync sam run: {stage}: {exc}", file=sys.stderr)
        if quorum is not None:
            quorum.close()
        return 1
    sup = SamSupervisor(settings, quorum=quorum, cmap=cmap, raw_heartbeats=True, hc_fd_slot=hc_fd_slot)
    sup.warn_signal = warn_signal
    sup.install_signal_handlers()
    return sup.run_program(command)


def _name_of(program: str) -> str:
    base = os.path.basename(program) or "program"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in base)
