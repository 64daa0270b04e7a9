"""Where numba keeps its compiled kernels, and whether that cache is warm.

numba's cache does not notice when a jitted function's dependency in another module
changes, so a stale kernel could run silently. The cache directory is therefore keyed on a
hash of every package source file that uses numba: any change to a kernel or a helper gives
a fresh directory, which ``pycorosync warm-cache`` fills once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("pycorosync", "engine", "ipc", "transports", "services", "monitoring")
WARM_MARKER = ".pycorosync-warm"
ENV_ROOT = "PYCOROSYNC_NUMBA_CACHE_ROOT"

_log = logging.getLogger("MAIN")
_cold_logged = False


def _source_dirs() -> list[Path]:
    """The folders that hold the package's modules, installed or in a source tree."""
    here = Path(__file__).resolve().parent
    import_root = here.parent
    dirs = [here]
    for name in SOURCE_DIRS[1:]:
        for candidate in (here / name, import_root / name):
            if candidate.is_dir():
                dirs.append(candidate)
                break
    return dirs


def sources_hash() -> str:
    """A short hash of every package source file that mentions numba."""
    digest = hashlib.sha256()
    files: list[Path] = []
    for d in _source_dirs():
        files.extend(p for p in d.rglob("*.py") if "__pycache__" not in p.parts)
    for path in sorted(files):
        try:
            text = path.read_bytes()
        except OSError:
            continue
        if b"numba" not in text:
            continue
        digest.update(path.name.encode())
        digest.update(text)
    return digest.hexdigest()[:16]


def cache_root() -> Path:
    """The parent of all keyed cache directories."""
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pycorosync" / "numba"


def configure() -> str:
    """Sets NUMBA_CACHE_DIR unless already set (by the user, or by a parent process); returns it."""
    current = os.environ.get("NUMBA_CACHE_DIR")
    if current:
        return current
    path = str(cache_root() / sources_hash())
    os.environ["NUMBA_CACHE_DIR"] = path
    return path


def is_warm() -> bool:
    """True once ``pycorosync warm-cache`` has compiled every kernel into the current directory."""
    return (Path(os.environ.get("NUMBA_CACHE_DIR", configure())) / WARM_MARKER).exists()


def check_warm(process: str) -> bool:
    """Logs once per process when the cache is cold (the process will compile, slowly)."""
    global _cold_logged
    warm = is_warm()
    if not warm and not _cold_logged:
        _cold_logged = True
        _log.warning(
            "%s: numba cache %s is cold; kernels compile on first use (run 'pycorosync warm-cache')",
            process,
            os.environ.get("NUMBA_CACHE_DIR"),
        )
    return warm


def mark_warm() -> None:
    path = Path(os.environ["NUMBA_CACHE_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    (path / WARM_MARKER).write_text("ok\n")
