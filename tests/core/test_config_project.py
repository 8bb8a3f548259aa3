"""Project space discovery, init and configuration validation."""

import os
from pathlib import Path

import pytest

from sails.config import load_settings
from sails.errors import ConfigError, ProjectNotFoundError
from sails.project import find_project_root, init_project, open_project


def test_init_is_idempotent(tmp_path):
    p = init_project(tmp_path / "proj")
    for name in ("datasets", "datasets_raw", "SRDP_weblogs", "db", "schemas", "reports", "logs"):
        assert (p.root / name).is_dir()
    assert (p.root / "schemas" / "catalog.sql").read_text().count("CREATE TABLE") >= 7
    cfg = (p.root / "sails.toml").read_text()
    (p.root / "sails.toml").write_text(cfg + "\n# my edit\n")
    p.catalog.upsert_mous({"mous_id": "uid://A001/X1/X2"})
    p2 = init_project(tmp_path / "proj")  # again: keeps the user's config and the catalog rows
    assert (p2.root / "sails.toml").read_text().endswith("# my edit\n")
    assert p2.catalog.mous_ids() == ["uid://A001/X1/X2"]


def test_discovery_order(tmp_path, monkeypatch):
    a = init_project(tmp_path / "a").root
    b = init_project(tmp_path / "b").root
    sub = a / "datasets" / "deep"
    sub.mkdir()
    monkeypatch.chdir(sub)
    monkeypatch.delenv("SAILS_PROJECT", raising=False)
    assert find_project_root() == a
    monkeypatch.setenv("SAILS_PROJECT", str(b))
    assert find_project_root() == b
    assert find_project_root(a) == a  # explicit wins
    monkeypatch.delenv("SAILS_PROJECT")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ProjectNotFoundError, match="no project space found"):
        find_project_root()


def test_wrong_type_names_the_key(tmp_path):
    cfg = tmp_path / "sails.toml"
    cfg.write_text("[execution]\ncasa_slots = 'many'\n")
    with pytest.raises(ConfigError, match=r"execution\.casa_slots"):
        load_settings(cfg)
    cfg.write_text("[imaging]\nrobust = 7\n")
    with pytest.raises(ConfigError, match=r"imaging\.robust"):
        load_settings(cfg)
    cfg.write_text("[imaging]\nrobustness = 0.5\n")
    with pytest.raises(ConfigError, match=r"imaging\.robustness"):
        load_settings(cfg)
    cfg.write_text("[imaging\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg)


def test_env_overrides(tmp_path, monkeypatch):
    p = init_project(tmp_path / "p")
    monkeypatch.setenv("SAILS_EXECUTION__CASA_SLOTS", "5")
    monkeypatch.setenv("SAILS_IMAGING__ROBUST", "-0.5")
    s = open_project(p.root).settings
    assert s.execution.casa_slots == 5 and s.imaging.robust == -0.5
    monkeypatch.setenv("SAILS_EXECUTION__CASA_SLOTS", "x")
    with pytest.raises(ConfigError, match="casa_slots"):
        open_project(p.root)


def test_default_toml_matches_defaults(tmp_path):
    """The commented sails.toml written by init states the real defaults."""
    p = init_project(tmp_path / "p")
    assert load_settings(p.root / "sails.toml") == load_settings(None)


def test_relative_and_absolute_layout(tmp_path):
    cfg = tmp_path / "sails.toml"
    cfg.write_text(f'[layout]\ndatasets = "{tmp_path / "elsewhere"}"\nlogs = "L"\n')
    p = open_project(tmp_path)
    assert p.datasets == tmp_path / "elsewhere"
    assert p.logs == tmp_path / "L"
    assert Path(os.fspath(p.catalog_path)).parent == tmp_path / "db"
