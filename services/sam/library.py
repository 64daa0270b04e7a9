"""``pycorosync.sam``: corosync's libsam for Python (COROSYNC.md §6).

    from pycorosync import sam

    sam.initialize(1000, sam.SAM_RECOVERY_POLICY_RESTART)   # health check every second, restart on failure
    instance_id = sam.register()      # forks: this process stays behind as the supervisor, never returning
                                      # while children live; the child returns here (1, then 2, 3 ... per restart)
    state = sam.data_restore()        # what the previous instance stored (b"" at first)
    sam.start()                       # from now on a missed health check or a death is a failure
    while work():
        sam.hc_send()                 # or sam.hc_callback_register(cb): a thread sends them while cb() returns 0
        sam.data_store(new_state)     # kept by the supervisor across restarts
    sam.stop(); sam.finalize()        # exit after stop() ends the supervisor with this exit status

Every call raises ``CsError`` with corosync's code where libsam returns one: CS_ERR_BAD_HANDLE for a
call in the wrong state, CS_ERR_INVALID_PARAM for a bad policy or argument, CS_ERR_LIBRARY when the
supervisor is gone. ``Sam`` is one handle; the module functions use a process-wide one, as libsam does.

Beyond corosync: ``initialize`` takes a restart-storm limit (default 5 restarts within 60 s, then
the supervisor gives up and exits non-zero), resource limits (``max_rss_bytes``, ``max_cpu_percent``:
a sample over them is a failed health check), ``run_dir`` for the cmap/quorum services, and an
injectable ``quorum_source``. The supervisor exits with ``os._exit`` (after flushing stdio and
logging): the application's own cleanups belong to its child, not to its supervisor.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

from pycorosync.engine.supervisor.policy import RestartPolicy
from pycorosync.ipc.errors import (
    CS_ERR_BAD_HANDLE,
    CS_ERR_INVALID_PARAM,
    CS_ERR_LIBRARY,
    CS_ERR_TOO_BIG,
    CS_OK,
    CsError,
)
from pycorosync.services.sam import protocol as sp
from pycorosync.services.sam.quorumsource import QuorumSource
from pycorosync.services.sam.resources import ResourceLimits
from pycorosync.services.sam.settings import SamSettings, default_restart_policy
from pycorosync.services.sam.supervisor import SamSupervisor

log = logging.getLogger("SAM")

HcCallback = Callable[[], int]
_PR_SET_PDEATHSIG = 1


class SamState(enum.IntEnum):
    """libsam's internal status."""

    NOT_INITIALIZED = 0
    INITIALIZED = 1
    REGISTERED = 2
    STARTED = 3
    FINALIZED = 4


class Sam:
    """One SAM handle (see the module docstring); ``pycorosync.sam``'s functions use a shared one."""

    def __init__(self) -> None:
        self.state = SamState.NOT_INITIALIZED
        self.instance_id = 0
        self._settings: SamSettings | None = None
        self._run_dir: str | None = None
        self._quorum: QuorumSource | None = None
        self._warn_signal: int = signal.SIGTERM
        self._data = b""
        self._cmd_fd: int | None = None  # child: write end of the command pipe
        self._reply_fd: int | None = None  # child: read end of the reply pipe
        self._lock = threading.Lock()
        self._hc_callback: HcCallback | None = None
        self._hc_thread: threading.Thread | None = None
        self._hc_wake = threading.Condition()
        self._hc_gave_up = False

    # -- setup -----------------------------------------------------------------------------------
    def initialize(
        self,
        time_interval_ms: int,
        recovery_policy: int,
        *,
        restart_policy: RestartPolicy | None = None,
        max_rss_bytes: int | None = None,
        max_cpu_percent: float | None = None,
        run_dir: str | None = None,
        quorum_source: QuorumSource | None = None,
        kill_grace_ms: int | None = None,
        sample_period_ms: int = 1000,
    ) -> None:
        """sam_initialize: health-check period (0 = none) and recovery policy (QUIT/RESTART | QUORUM | CMAP)."""
        if self.state != SamState.NOT_INITIALIZED:
            raise CsError(CS_ERR_BAD_HANDLE, "sam_initialize: already initialized")
        if not sp.valid_policy(recovery_policy):
            raise CsError(CS_ERR_INVALID_PARAM, f"sam_initialize: recovery policy {recovery_policy:#x} is not valid")
        try:
            limits = ResourceLimits(max_rss_bytes, max_cpu_percent)
        except ValueError as exc:
            raise CsError(CS_ERR_INVALID_PARAM, f"sam_initialize: {exc}") from None
        settings = SamSettings(
            interval_ms=int(time_interval_ms),
            recovery_policy=recovery_policy,
            restart_policy=restart_policy or default_restart_policy(),
            limits=limits,
            kill_grace_ms=kill_grace_ms,
            sample_period_ms=sample_period_ms,
            name=_program_name(),
        )
        if settings.quorum:
            if quorum_source is None:
                from pycorosync.services.sam.quorumsource import ClientQuorumSource

                quorum_source = ClientQuorumSource(run_dir)
            quorum_source.dispatch()  # the initial quorate state, as corosync dispatches it here
        self._settings = settings
        self._run_dir = run_dir
        self._quorum = quorum_source
        self._warn_signal = signal.SIGTERM
        self._data = b""
        self.state = SamState.INITIALIZED

    def register(self) -> int:
        """sam_register: forks. Returns the instance id (1, 2, ...) in the child; the parent supervises.

        The parent returns only by raising CsError before the first fork (CMAP flag without a cmap
        service: CS_ERR_LIBRARY); otherwise it exits the process when supervision ends.
        """
        if self.state != SamState.INITIALIZED or self._settings is None:
            raise CsError(CS_ERR_BAD_HANDLE, "sam_register: call sam_initialize first (once)")
        settings = self._settings
        cmap = None
        if settings.cmap:
            from pycorosync.services.sam.cmapstate import SamCmapKeys

            cmap = SamCmapKeys(self._run_dir, os.getpid())
        sup = SamSupervisor(settings, quorum=self._quorum, cmap=cmap)
        sup.warn_signal = self._warn_signal
        sup.data = self._data
        sup.install_signal_handlers()
        while True:
            instance_id = sup.next_instance()
            cmd_r, cmd_w = os.pipe2(os.O_CLOEXEC)
            reply_r, reply_w = os.pipe2(os.O_CLOEXEC)
            _flush_stdio()
            parent_pid = os.getpid()
            try:
                pid = os.fork()
            except OSError as exc:
                for fd in (cmd_r, cmd_w, reply_r, reply_w):
                    os.close(fd)
                sup.close()
                raise CsError(CS_ERR_LIBRARY, f"sam_register: fork failed: {exc.strerror}") from None
            if pid == 0:
                os.close(cmd_r)
                os.close(reply_w)
                self._become_child(sup, instance_id, cmd_w, reply_r)
                _die_with_parent(parent_pid)
                return instance_id
            os.close(cmd_w)
            os.close(reply_r)
            try:
                sup.watch_forked(pid, cmd_r, reply_w)
                end = sup.run_instance()
                if end.restart and sup.wait(end.delay_s):
                    continue
                code = sup.finish(end)
            except BaseException:
                # the parent must never return into the application while a child of it runs
                log.exception("SAM supervisor failed; killing its child")
                sup.close()
                code = 1
            _flush_stdio()
            logging.shutdown()
            os._exit(code)

    def _become_child(self, sup: SamSupervisor, instance_id: int, cmd_fd: int, reply_fd: int) -> None:
        self._data = sup.data
        self._warn_signal = sup.warn_signal
        sup.close_in_child()
        self._quorum = None  # the supervisor's; closed above
        self._cmd_fd, self._reply_fd = cmd_fd, reply_fd
        self.instance_id = instance_id
        self.state = SamState.REGISTERED
        self._lock = threading.Lock()

    # -- child side ------------------------------------------------------------------------------
    def _send(self, frame: bytes) -> None:
        fd = self._cmd_fd
        if fd is None:
            raise CsError(CS_ERR_BAD_HANDLE, "not a SAM child")
        view = memoryview(frame)
        try:
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except OSError as exc:
            raise CsError(CS_ERR_LIBRARY, f"SAM supervisor gone ({exc.strerror})") from None

    def _read_exact(self, n: int) -> bytes:
        assert self._reply_fd is not None
        out = b""
        while len(out) < n:
            try:
                chunk = os.read(self._reply_fd, n - len(out))
            except InterruptedError:
                continue
            except OSError:
                chunk = b""
            if not chunk:
                raise CsError(CS_ERR_LIBRARY, "SAM supervisor gone (reply pipe closed)")
            out += chunk
        return out

    def _request(self, frame: bytes, what: str) -> None:
        with self._lock:
            self._send(frame)
            head = self._read_exact(1)
            if head[0] == sp.REPLY_ERROR:
                head += self._read_exact(sp.REPLY_ERROR_BYTES - 1)
        code = sp.decode_reply(head)
        if code != CS_OK:
            raise CsError(code, f"{what}: refused by the SAM supervisor")

    def _require(self, what: str, *states: SamState) -> None:
        if self.state not in states:
            raise CsError(CS_ERR_BAD_HANDLE, f"{what}: not allowed in state {self.state.name.lower()}")

    def start(self) -> None:
        """sam_start: health checking starts (with QUORUM: blocks until the node is quorate)."""
        self._require("sam_start", SamState.REGISTERED)
        self._request(sp.encode(sp.Command.START), "sam_start")
        self.state = SamState.STARTED
        self._wake_hc_thread()

    def stop(self) -> None:
        """sam_stop: health checking stops; an exit now ends the supervisor with the exit status."""
        self._require("sam_stop", SamState.STARTED)
        self._request(sp.encode(sp.Command.STOP), "sam_stop")
        self.state = SamState.REGISTERED
        self._wake_hc_thread()

    def hc_send(self) -> None:
        """sam_hc_send: one health check (CS_ERR_BAD_HANDLE unless started)."""
        self._require("sam_hc_send", SamState.STARTED)
        with self._lock:
            self._send(sp.encode(sp.Command.HB))

    def hc_callback_register(self, callback: HcCallback | None) -> None:
        """sam_hc_callback_register: a thread sends health checks 4 times per interval while ``callback()``
        returns 0; any other return (or an exception) stops them, so the supervisor recovers. None after a
        first registration goes back to manual ``hc_send``."""
        self._require("sam_hc_callback_register", SamState.REGISTERED)
        assert self._settings is not None
        if self._settings.interval_ms == 0:
            raise CsError(CS_ERR_INVALID_PARAM, "sam_hc_callback_register: needs a time interval > 0")
        if self._hc_thread is None:
            if callback is None:
                raise CsError(CS_ERR_INVALID_PARAM, "sam_hc_callback_register: callback is None")
            self._hc_callback = callback
            self._hc_thread = threading.Thread(target=self._hc_loop, name="sam-hc", daemon=True)
            self._hc_thread.start()
            return
        with self._hc_wake:
            self._hc_callback = callback
            self._hc_wake.notify_all()

    def _wake_hc_thread(self) -> None:
        with self._hc_wake:
            self._hc_wake.notify_all()

    def _hc_loop(self) -> None:
        assert self._settings is not None
        period_s = self._settings.interval_ms / 4000.0
        ticks = 0
        while True:
            with self._hc_wake:
                while self.state != SamState.STARTED or self._hc_callback is None or self._hc_gave_up:
                    if self.state == SamState.FINALIZED:
                        return
                    self._hc_wake.wait()
                callback = self._hc_callback
            with contextlib.suppress(CsError):  # stopped meanwhile, or the supervisor is gone (so are we, soon)
                self.hc_send()
            ticks += 1
            if ticks >= 4:
                ticks = 0
                try:
                    healthy = callback() == 0
                except Exception:
                    log.exception("SAM health-check callback raised; counting it as a failure")
                    healthy = False
                if not healthy:
                    self._hc_gave_up = True  # corosync: no more health checks from this instance
                    continue
            with self._hc_wake:
                self._hc_wake.wait(period_s)

    def warn_signal_set(self, signum: int) -> None:
        """sam_warn_signal_set: the first signal a failing child gets (SIGTERM by default)."""
        self._require("sam_warn_signal_set", SamState.INITIALIZED, SamState.REGISTERED, SamState.STARTED)
        if not 0 < int(signum) < signal.NSIG:
            raise CsError(CS_ERR_INVALID_PARAM, f"sam_warn_signal_set: {signum} is not a signal")
        if self._cmd_fd is not None:
            self._request(sp.encode(sp.Command.WARN_SIGNAL_SET, signum=int(signum)), "sam_warn_signal_set")
        self._warn_signal = int(signum)

    def data_store(self, data: bytes | None) -> None:
        """sam_data_store: keeps ``data`` in the supervisor across restarts (None or b"" forgets it)."""
        self._require("sam_data_store", SamState.INITIALIZED, SamState.REGISTERED, SamState.STARTED)
        blob = bytes(data or b"")
        if len(blob) > sp.MAX_DATA_BYTES:
            raise CsError(CS_ERR_TOO_BIG, f"sam_data_store: {len(blob)} bytes, at most {sp.MAX_DATA_BYTES}")
        if self._cmd_fd is not None:
            self._request(sp.encode(sp.Command.DATA_STORE, blob), "sam_data_store")
        self._data = blob

    def data_getsize(self) -> int:
        """sam_data_getsize: size of the stored data."""
        self._require("sam_data_getsize", SamState.INITIALIZED, SamState.REGISTERED, SamState.STARTED)
        return len(self._data)

    def data_restore(self) -> bytes:
        """sam_data_restore: the stored data (b"" when none)."""
        self._require("sam_data_restore", SamState.INITIALIZED, SamState.REGISTERED, SamState.STARTED)
        return self._data

    def mark_failed(self) -> None:
        """sam_mark_failed: needs the CMAP flag; the supervisor kills this child and exits, cmap state ``failed``."""
        self._require("sam_mark_failed", SamState.REGISTERED, SamState.STARTED)
        assert self._settings is not None
        if not self._settings.cmap:
            raise CsError(CS_ERR_INVALID_PARAM, "sam_mark_failed: needs the SAM_RECOVERY_POLICY_CMAP flag")
        with self._lock:
            self._send(sp.encode(sp.Command.MARK_FAILED))

    def finalize(self) -> None:
        """sam_finalize: stops health checking; no more recovery for this instance."""
        self._require("sam_finalize", SamState.INITIALIZED, SamState.REGISTERED, SamState.STARTED)
        if self.state == SamState.STARTED:
            self.stop()
        self.state = SamState.FINALIZED
        self._wake_hc_thread()


def _program_name() -> str:
    base = os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else "python") or "python"
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in base)
    return name or "python"


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _die_with_parent(parent_pid: int) -> None:
    """A child outlives no supervisor: an unsupervised second copy is what SAM exists to prevent."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)  # the supervisor died before the death signal was armed


_default = Sam()


def initialize(time_interval_ms: int, recovery_policy: int, **options: object) -> None:
    """sam_initialize on the process's handle (see ``Sam.initialize`` for the options)."""
    _default.initialize(time_interval_ms, recovery_policy, **options)  # type: ignore[arg-type]


def register() -> int:
    """sam_register: forks; returns the instance id in the child (see ``Sam.register``)."""
    return _default.register()


def start() -> None:
    """sam_start."""
    _default.start()


def stop() -> None:
    """sam_stop."""
    _default.stop()


def hc_send() -> None:
    """sam_hc_send."""
    _default.hc_send()


def hc_callback_register(callback: HcCallback | None) -> None:
    """sam_hc_callback_register."""
    _default.hc_callback_register(callback)


def warn_signal_set(signum: int) -> None:
    """sam_warn_signal_set."""
    _default.warn_signal_set(signum)


def data_store(data: bytes | None) -> None:
    """sam_data_store."""
    _default.data_store(data)


def data_getsize() -> int:
    """sam_data_getsize."""
    return _default.data_getsize()


def data_restore() -> bytes:
    """sam_data_restore."""
    return _default.data_restore()


def mark_failed() -> None:
    """sam_mark_failed."""
    _default.mark_failed()


def finalize() -> None:
    """sam_finalize."""
    _default.finalize()


def instance_id() -> int:
    """This child's instance id (0 before ``register``)."""
    return _default.instance_id
