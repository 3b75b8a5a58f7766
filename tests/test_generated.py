"""The sync twins are generated, never hand-kept: each is in step with its async source."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from . import unasync

ROOT = Path(__file__).resolve().parent.parent


def test_every_generated_file_is_in_step_with_its_source() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.unasync", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_a_hand_edit_of_a_generated_file_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for source, target, _, _ in unasync.PAIRS:
        for path in (source, target):
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / path, tmp_path / path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")  # ruff's settings
    monkeypatch.setattr(unasync, "ROOT", tmp_path)
    assert unasync.main(["--check"]) == 0
    driver = tmp_path / "isr/_sync/driver.py"
    driver.write_text(driver.read_text().replace("delay * 1.5", "delay * 2"))
    assert unasync.main(["--check"]) == 1
    assert unasync.main([]) == 0  # regenerated
    assert unasync.main(["--check"]) == 0
    assert "delay * 1.5" in driver.read_text()


def test_generated_files_are_sync_code() -> None:
    generated, _ = unasync.generate()
    for target, text in generated.items():
        assert text.startswith("# GENERATED from "), target
        assert "await " not in text, target
        assert "async def" not in text, target


def test_no_sync_twin_is_written_by_hand() -> None:
    """The drivers and the network stores' operations come in one async source each."""
    for source, target, _, _ in unasync.PAIRS:
        assert "/_async/" in source, source
        assert "/_sync/" in target, target
    hand_written = [
        path
        for folder in ("isr/_sync", "adapters/_sync", "tests/_sync")
        for path in (ROOT / folder).glob("*.py")
        if path.name != "__init__.py"
        and not path.read_text(encoding="utf-8").startswith("# GENERATED from ")
    ]
    assert hand_written == []
