"""The package's shape: namespace mapping, CLI, numba cache keying, import rules."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pycorosync
from pycorosync import jitcache

ROOT = Path(__file__).resolve().parents[2]


def test_top_level_folders_import_under_the_pycorosync_namespace() -> None:
    import pycorosync.engine
    import pycorosync.ipc
    import pycorosync.monitoring
    import pycorosync.services
    import pycorosync.transports

    assert Path(pycorosync.engine.__file__).parent.name == "engine"
    assert Path(pycorosync.ipc.__file__).parent.name == "ipc"


def test_cli_prints_its_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pycorosync", "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == f"pycorosync {pycorosync.__version__}"


def test_numba_cache_dir_is_keyed_on_the_jitted_sources() -> None:
    assert os.environ["NUMBA_CACHE_DIR"].endswith(jitcache.sources_hash()) or "NUMBA_CACHE_DIR" in os.environ
    assert len(jitcache.sources_hash()) == 16


def test_numba_cache_key_changes_when_a_jitted_source_changes(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pkg = tmp_path / "pycorosync"
    pkg.mkdir()
    (pkg / "k.py").write_text("import numba\nX = 1\n")
    monkeypatch.setattr(jitcache, "_source_dirs", lambda: [pkg])
    first = jitcache.sources_hash()
    (pkg / "k.py").write_text("import numba\nX = 2\n")
    assert jitcache.sources_hash() != first
    (pkg / "plain.py").write_text("Y = 1\n")  # no numba: not part of the key
    second = jitcache.sources_hash()
    (pkg / "plain.py").write_text("Y = 2\n")
    assert jitcache.sources_hash() == second


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_pure_totem_core_imports_no_clock_randomness_or_io() -> None:
    forbidden = {"time", "random", "socket", "os", "select", "threading", "subprocess", "asyncio", "selectors"}
    for path in (ROOT / "engine" / "totem").rglob("*.py"):
        bad = {n for n in _imports(path) if n.split(".")[0] in forbidden}
        bad |= {n for n in _imports(path) if n.startswith("pycorosync.") and not n.startswith("pycorosync.engine.totem")
                and not n.startswith("pycorosync.engine.config")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: the Totem core must stay pure"


# the cmap client side: the library, its wire protocol and the publisher built on the client only
CMAP_CLIENT = ("pycorosync.services.cmap.client", "pycorosync.services.cmap.protocol", "pycorosync.services.cmap.publisher")


def test_services_never_import_each_other() -> None:
    services = ROOT / "services"
    for svc in [p for p in services.iterdir() if p.is_dir() and not p.name.startswith("_")]:
        for path in svc.rglob("*.py"):
            for name in _imports(path):
                parts = name.split(".")
                if name.startswith(CMAP_CLIENT):
                    continue  # ARCHITECTURE.md §3: services talk through cluster messages or the cmap client
                if parts[:2] == ["pycorosync", "services"] and len(parts) > 2 and parts[2] not in (svc.name, "common"):
                    raise AssertionError(f"{path.relative_to(ROOT)} imports {name}: services talk through messages")
