"""pycorosync keygen behaves like corosync-keygen."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pycorosync.cli import main
from pycorosync.transports.crypto import load_authkey


def test_keygen_prints_corosyncs_lines_and_writes_a_0400_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "authkey"
    assert main(["keygen", "-k", str(key)]) == 0
    out = capsys.readouterr().out
    assert out == (
        "Corosync Cluster Engine Authentication key generator.\n"
        "Gathering 2048 bits for key from /dev/urandom.\n"
        f"Writing corosync key to {key}.\n"
    )
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    assert len(key.read_bytes()) == 256
    assert load_authkey(str(key)) == key.read_bytes()


def test_keygen_size_and_random_device_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "random"
    src.write_bytes(bytes(range(256)) * 4)
    key = tmp_path / "k"
    assert main(["keygen", "-k", str(key), "-s", "512", "-r", str(src), "-l"]) == 0
    assert f"Gathering 4096 bits for key from {src}." in capsys.readouterr().out
    assert key.read_bytes() == src.read_bytes()[:512]


def test_keygen_replaces_an_existing_read_only_key(tmp_path: Path) -> None:
    key = tmp_path / "k"
    assert main(["keygen", "-k", str(key)]) == 0
    first = key.read_bytes()
    assert main(["keygen", "-k", str(key)]) == 0
    assert key.read_bytes() != first


@pytest.mark.parametrize("size", ["127", "4097", "lots"])
def test_keygen_refuses_sizes_outside_128_to_4096(tmp_path: Path, size: str, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k"
    assert main(["keygen", "-k", str(key), "-s", size]) == 1
    assert "Error" in capsys.readouterr().err
    assert not key.exists()


def test_keygen_fails_cleanly_when_the_folder_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "-k", str(tmp_path / "no" / "k")]) == 1
    assert "Could not write key file" in capsys.readouterr().err


def test_keygen_is_a_cli_subcommand() -> None:
    r = subprocess.run([sys.executable, "-m", "pycorosync", "keygen", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "-k FILE" in r.stdout
