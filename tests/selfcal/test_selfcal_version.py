"""Issue #22 defect 7: a job without auto-selfcal's package metadata (vendored as source in
a CASA-only image) still reports a version instead of failing at its very end."""

from __future__ import annotations

import importlib.metadata


def test_version_without_package_metadata(monkeypatch):
    from sails.casa.steps import selfcal

    real = importlib.metadata.version
    assert selfcal.auto_selfcal_version() == real("auto-selfcal")

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert isinstance(selfcal.auto_selfcal_version(), str)
