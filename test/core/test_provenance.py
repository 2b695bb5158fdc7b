"""The source digest that benchmarks compare before reusing a run: code counts, charts do not."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mmkd_ros.core import provenance


def _digest_with(path: Path) -> str:
    path.write_bytes(uuid.uuid4().bytes)
    try:
        provenance.code_version.cache_clear()
        return provenance.code_version()["source"]
    finally:
        path.unlink()
        provenance.code_version.cache_clear()


def test_charts_do_not_change_the_source_digest_code_does() -> None:
    root = provenance.SOURCE_ROOT
    if not (root / ".git").exists():
        pytest.skip("not a git checkout: the digest names the package version")
    provenance.code_version.cache_clear()
    before = provenance.code_version()["source"]
    name = f"zz_provenance_{uuid.uuid4().hex[:8]}"
    assert _digest_with(root / "bench" / "figures" / f"{name}.png") == before
    assert _digest_with(root / "bench" / f"{name}.py") != before
    assert _digest_with(root / "mmkd_ros" / f"{name}.py") != before
    provenance.code_version.cache_clear()
    assert provenance.code_version()["source"] == before
