"""Running a node as a daemon: run dir, pid file, logging, foreground or background (double fork).

In background mode the launching command returns only once the node is ready (exit 0), or with
the error that stopped it (exit 1): the final daemon process reports through a pipe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path

from pycorosync.engine.supervisor import forkstart, logsetup, sched
from pycorosync.engine.supervisor.logsetup import NOTICE
from pycorosync.engine.supervisor.node import REGISTRY_NAME, NodePlan, NodeSupervisor, StartError
from pycorosync.engine.supervisor.pidfile import AlreadyRunning, PidFile
from pycorosync.engine.supervisor.sched import Scheduling

Report = Callable[[str | None], None]  # None = the node is ready; a string = why it is not

_log = logging.getLogger("MAIN")


def prepare_run_dir(run_dir: Path) -> None:
    """Creates the run dir (mode 0755) if missing; raises OSError naming it when unusable."""
    try:
        run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create run dir {run_dir}: {exc.strerror}") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise OSError(f"run dir {run_dir} is not writable")


WARM_TIMEOUT_S = 600.0


def ensure_warm_cache() -> None:
    """Points every child at the same keyed NUMBA_CACHE_DIR, and fills it first if it is cold.

    Seven processes compiling the same kernels at once take about 20 s instead of 2.5 s
    (PROTOTYPES.md §7), so a cold cache is warmed once, in a separate process; the supervisor loads the
    kernels from the warm cache afterwards (``preload_children``).
    """
    from pycorosync import jitcache

    cache_dir = jitcache.configure()  # exported in os.environ: children inherit it
    if os.environ.get("NUMBA_DISABLE_JIT") == "1" or jitcache.is_warm():
        return
    _log.log(NOTICE, "numba cache %s is cold; compiling kernels once before starting the node", cache_dir)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pycorosync", "warm-cache"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=WARM_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _log.warning("warming the numba cache failed (%s); each process will compile on its own", exc)
        return
    if done.returncode != 0:
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        _log.warning("warming the numba cache failed (%s); each process will compile on its own", last[0])


def preload_children(plan: NodePlan, bytecode: Mapping[str, str]) -> None:
    """Loads the node's modules and kernels into the supervisor, which then forks its Python children
    (``forkstart``); needs the warm cache. The supervisor compiles and reuses bytecode as they do."""
    from pycorosync import jitcache

    if os.environ.get("NUMBA_DISABLE_JIT") != "1" and not jitcache.is_warm():
        _log.warning("numba cache is still cold: each child starts as a fresh interpreter")
        return
    if bytecode.get("PYTHONPYCACHEPREFIX"):
        sys.pycache_prefix = bytecode["PYTHONPYCACHEPREFIX"]
        sys.dont_write_bytecode = False
    modules = [m[0] for spec in plan.children if spec.fork and (m := forkstart.module_of(spec.argv))]
    if modules:
        took = forkstart.preload(modules)
        if forkstart.enabled():
            _log.info("node modules and kernels preloaded in %.2f s: children start by fork", took)


def bytecode_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the children so that they load compiled bytecode instead of compiling every module.

    With ``PYTHONDONTWRITEBYTECODE`` set (common in containers and CI), each of a node's processes compiled
    every pycorosync module from source at each start, a quarter of its import time. The children write
    and reuse their bytecode under the user's cache dir (``PYTHONPYCACHEPREFIX``), never in the source
    tree, unless a prefix is already chosen.
    """
    env = os.environ if environ is None else environ
    if not env.get("PYTHONDONTWRITEBYTECODE"):
        return {}
    from pycorosync import jitcache

    prefix = env.get("PYTHONPYCACHEPREFIX") or str(jitcache.cache_root().parent / "pycache")
    return {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": prefix}


def run_node(
    plan: NodePlan,
    *,
    run_dir: Path,
    log_keys: Mapping[str, object],
    report: Report | None = None,
    child_env: Mapping[str, str] | None = None,
    config_path: str | None = None,
    scheduling: Scheduling | None = None,
) -> int:
    """The daemon's body: logging, run dir, pid file, then the node until SIGTERM; returns the exit code.
    With ``config_path``, a SIGHUP (``cfgtool -L``, a config reload) re-applies the file's logging keys.
    ``scheduling`` (``system.sched_rr`` / ``system.priority``) is set once the numba cache is warm, before
    the children start: they inherit it."""
    said = False

    def tell(error: str | None) -> None:
        nonlocal said
        if not said and report is not None:
            said = True
            report(error)

    try:
        setup = logsetup.configure(log_keys, config_path=config_path)
    except ValueError as exc:
        tell(str(exc))
        return 1
    pidfile = PidFile(run_dir)
    try:
        prepare_run_dir(run_dir)
        pidfile.acquire()
    except (OSError, AlreadyRunning) as exc:
        _log.error("%s", exc)
        tell(str(exc))
        return 1
    ensure_warm_cache()
    if scheduling is not None:
        _log.info("process scheduling: %s", sched.apply(scheduling))
    env = logsetup.child_env(log_keys)
    bytecode = bytecode_env()
    env.update(bytecode)
    preload_children(plan, bytecode)
    env.update(child_env or {})
    supervisor = NodeSupervisor(plan, extra_env=env, on_reload=setup.reopen, registry=run_dir / REGISTRY_NAME)
    try:
        supervisor.install_signal_handlers()
        _log.log(NOTICE, "pycorosync Cluster Engine starting up (pid %d, run dir %s)", os.getpid(), run_dir)
        try:
            supervisor.start()
        except StartError as exc:
            _log.error("%s", exc)
            tell(str(exc))
            return 1
        if supervisor.stop_reason is None:
            tell(None)
            supervisor.run()
        else:
            tell(f"stopped while starting ({supervisor.stop_reason})")
        if supervisor.stop_reason and supervisor.exit_code == 0:
            _log.log(NOTICE, "Node was shut down by a signal")
        supervisor.stop()
        code = supervisor.exit_code
        if code == 0:
            _log.log(NOTICE, "pycorosync Cluster Engine exiting normally")
        else:
            _log.error("pycorosync Cluster Engine exiting with status %d: %s", code, supervisor.stop_reason)
        return code
    finally:
        supervisor.close()
        pidfile.release()


def daemonize(body: Callable[[Report], int]) -> int:
    """Runs ``body(report)`` in a detached daemon (double fork, setsid, stdio on /dev/null).

    Returns, in the launching process, 0 once ``body`` reported ready, or 1 after printing the
    error it reported (or that it died first). Never returns in the daemon itself.
    """
    status_r, status_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):  # or buffered text would be written twice, once per process
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    first = os.fork()
    if first:
        os.close(status_w)
        os.waitpid(first, 0)
        with os.fdopen(status_r, "rb") as pipe:
            message = pipe.read().decode(errors="replace").strip()
        if message == "ready":
            return 0
        text = message.removeprefix("error ") if message else "the daemon exited before it was ready"
        print(f"pycorosync daemon: {text}", file=sys.stderr)
        return 1
    # intermediate: new session, then fork again so that the daemon can never regain a terminal
    os.close(status_r)
    code = 1
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        os.chdir("/")
        os.umask(0o022)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)

        pending = [status_w]  # emptied once said: the fd number may be reused afterwards

        def report(error: str | None) -> None:
            while pending:
                fd = pending.pop()
                with contextlib.suppress(OSError):
                    os.write(fd, b"ready\n" if error is None else f"error {error}\n".encode())
                with contextlib.suppress(OSError):
                    os.close(fd)

        try:
            code = body(report)
            report(f"the daemon exited with status {code} before it was ready")
        except BaseException:
            report(traceback.format_exc(limit=3).strip().splitlines()[-1])
            raise
    finally:
        os._exit(code)
