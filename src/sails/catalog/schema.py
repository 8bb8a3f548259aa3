"""Catalog schema, versioned with ``PRAGMA user_version`` and migrated forward in place.

Every status value is enforced by a CHECK constraint; events are append-only (triggers).
To change the schema: add a migration function to ``MIGRATIONS`` and bump
``SCHEMA_VERSION``; never edit an old migration.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

MOUS_STAGES = ("download", "verify", "split")
TARGET_STAGES = ("selfcal", "image", "cleanup")
STAGES = MOUS_STAGES + TARGET_STAGES
STATUSES = ("pending", "running", "done", "failed", "skipped", "blocked")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


# --- version 1: the first released schema -------------------------------------------------
V1 = f"""
CREATE TABLE projects (
    project_code TEXT PRIMARY KEY,
    proposal_id TEXT, proposal_abstract TEXT, proposal_authors TEXT,
    pi_userid TEXT, pi_name TEXT, scientific_category TEXT,
    bib_reference TEXT, pub_title TEXT, first_author TEXT, authors TEXT,
    pub_abstract TEXT, publication_year INTEGER,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE mous (
    mous_id TEXT PRIMARY KEY CHECK (mous_id LIKE 'uid://%'),
    project_code TEXT REFERENCES projects(project_code) ON UPDATE CASCADE,
    group_ous_uid TEXT, num_asdms INTEGER,
    obs_collection TEXT, obs_publisher_did TEXT, facility_name TEXT, instrument_name TEXT,
    antenna_arrays TEXT, dataproduct_type TEXT, calib_level INTEGER,
    access_url TEXT, access_format TEXT, data_rights TEXT, obs_title TEXT,
    scan_intent TEXT, obs_type TEXT, obs_creator_name TEXT, obs_release_date TEXT,
    qa2_passed TEXT, pwv REAL, scientific_category TEXT, science_keyword TEXT,
    preferred_datacolumn TEXT CHECK (preferred_datacolumn IN ('DATA', 'CORRECTED_DATA')),
    spw_remap TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE targets (
    id INTEGER PRIMARY KEY,
    mous_id TEXT NOT NULL REFERENCES mous(mous_id) ON DELETE CASCADE,
    alma_source_name TEXT NOT NULL,
    obs_id TEXT NOT NULL,
    ra REAL, dec REAL, gal_longitude REAL, gal_latitude REAL,
    ang_res_arcsec REAL, las_arcsec REAL, fov_arcsec REAL, is_mosaic INTEGER,
    min_freq_ghz REAL, max_freq_ghz REAL, central_freq_ghz REAL, bandwidth_ghz REAL,
    freq_res_khz REAL, vel_res_kms REAL,
    em_min REAL, em_max REAL, em_res_power REAL, em_xel INTEGER,
    pwv REAL, asdm_uid TEXT, cont_sens_bandwidth REAL, line_sens_10kms REAL,
    line_sens_native REAL, t_min REAL, t_max REAL, t_exptime REAL, t_resolution REAL,
    spatial_scale_max REAL, s_fov REAL, s_region TEXT, s_resolution REAL,
    band_list TEXT, frequency_support TEXT, pol_states TEXT, scan_intent TEXT,
    spw_id INTEGER,
    created_at REAL NOT NULL, updated_at REAL NOT NULL,
    UNIQUE (mous_id, alma_source_name, obs_id)
);
CREATE INDEX targets_by_mous ON targets(mous_id, alma_source_name);
CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    mous_id TEXT NOT NULL REFERENCES mous(mous_id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('srdp', 'product', 'auxiliary', 'raw', 'readme', 'other')),
    filename TEXT, size INTEGER, semantics TEXT, content_type TEXT, checksum TEXT,
    created_at REAL NOT NULL,
    UNIQUE (mous_id, url)
);
CREATE TABLE stages (
    id INTEGER PRIMARY KEY,
    mous_id TEXT NOT NULL REFERENCES mous(mous_id) ON DELETE CASCADE,
    target TEXT NOT NULL DEFAULT '',
    stage TEXT NOT NULL CHECK (stage IN {_in(STAGES)}),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {_in(STATUSES)}),
    reason TEXT, error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT, lease_expires REAL,
    started_at REAL, finished_at REAL, updated_at REAL NOT NULL,
    UNIQUE (mous_id, target, stage),
    CHECK ((stage IN {_in(MOUS_STAGES)}) = (target = ''))
);
CREATE INDEX stages_by_status ON stages(status, stage);
CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    mous_id TEXT NOT NULL REFERENCES mous(mous_id) ON DELETE CASCADE,
    target TEXT NOT NULL DEFAULT '',
    stage TEXT NOT NULL CHECK (stage IN {_in(STAGES)}),
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    spw TEXT, bytes INTEGER, checksum TEXT, metrics TEXT,
    created_at REAL NOT NULL,
    UNIQUE (path)
);
CREATE INDEX products_by_mous ON products(mous_id, target, stage);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    mous_id TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    stage TEXT,
    actor TEXT NOT NULL,
    from_status TEXT, to_status TEXT,
    reason TEXT
);
CREATE INDEX events_by_mous ON events(mous_id, id);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
"""


def run_script(con: sqlite3.Connection, script: str) -> None:
    """Execute statements one by one (``executescript`` would COMMIT our transaction)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            con.execute(buf)
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement: {buf!r}")


def _migrate_v1_to_v2(con: sqlite3.Connection) -> None:
    """v2: external job handles (CANFAR session ids) and download bookkeeping.

    ``stages.job_ref`` lets a restarted orchestrator reattach to a running remote job;
    ``mous.srdp_url`` records a registered SRDP restore; ``files.done_at`` marks finished
    transfers so a re-run never fetches them twice.
    """
    run_script(
        con,
        """
        ALTER TABLE stages ADD COLUMN job_ref TEXT;
        ALTER TABLE stages ADD COLUMN duration_s REAL;
        ALTER TABLE mous ADD COLUMN srdp_url TEXT;
        ALTER TABLE files ADD COLUMN done_at REAL;
        CREATE INDEX IF NOT EXISTS stages_by_lease ON stages(status, lease_expires);
        """
    )


def _create_v1(con: sqlite3.Connection) -> None:
    run_script(con, V1)


# MIGRATIONS[n] brings a version-n catalog to version n+1 (0 = empty file).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _create_v1,
    1: _migrate_v1_to_v2,
}
SCHEMA_VERSION = 2
