"""Catalog schema, versioned with ``PRAGMA user_version`` and migrated forward in place.

Every status value is enforced by a CHECK constraint; events are append-only (triggers).
To change the schema: add a migration function to ``MIGRATIONS`` and bump
``SCHEMA_VERSION``; never edit an old migration.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

# The stage names of v1/v2 catalogs, frozen with the migrations that use them. Since v3 the
# stage table (sails.pipeline) names the stages and the catalog checks names in code, so a new
# stage needs no migration.
V1_MOUS_STAGES = ("download", "verify", "split")
V1_STAGES = V1_MOUS_STAGES + ("selfcal", "image", "cleanup")
V1_STATUSES = ("pending", "running", "done", "failed", "skipped", "blocked")


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
    stage TEXT NOT NULL CHECK (stage IN {_in(V1_STAGES)}),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {_in(V1_STATUSES)}),
    reason TEXT, error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT, lease_expires REAL,
    started_at REAL, finished_at REAL, updated_at REAL NOT NULL,
    UNIQUE (mous_id, target, stage),
    CHECK ((stage IN {_in(V1_MOUS_STAGES)}) = (target = ''))
);
CREATE INDEX stages_by_status ON stages(status, stage);
CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    mous_id TEXT NOT NULL REFERENCES mous(mous_id) ON DELETE CASCADE,
    target TEXT NOT NULL DEFAULT '',
    stage TEXT NOT NULL CHECK (stage IN {_in(V1_STAGES)}),
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


STAGES_V3 = f"""
CREATE TABLE stages_v3 (
    id INTEGER PRIMARY KEY,
    mous_id TEXT NOT NULL REFERENCES mous(mous_id) ON DELETE CASCADE,
    target TEXT NOT NULL DEFAULT '',
    stage TEXT NOT NULL CHECK (stage GLOB '[a-z]*' AND stage NOT GLOB '*[^a-z0-9_]*'),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {_in(V1_STATUSES)}),
    reason TEXT, reason_code TEXT, error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT, lease_expires REAL,
    started_at REAL, finished_at REAL, updated_at REAL NOT NULL,
    job_ref TEXT, duration_s REAL,
    UNIQUE (mous_id, target, stage)
);
INSERT INTO stages_v3 (id, mous_id, target, stage, status, reason, error, attempts,
    lease_owner, lease_expires, started_at, finished_at, updated_at, job_ref, duration_s)
    SELECT id, mous_id, target, stage, status, reason, error, attempts, lease_owner,
    lease_expires, started_at, finished_at, updated_at, job_ref, duration_s FROM stages;
DROP TABLE stages;
ALTER TABLE stages_v3 RENAME TO stages;
CREATE INDEX stages_by_status ON stages(status, stage);
CREATE INDEX stages_by_lease ON stages(status, lease_expires);
CREATE TABLE products_v3 (
    id INTEGER PRIMARY KEY,
    mous_id TEXT NOT NULL REFERENCES mous(mous_id) ON DELETE CASCADE,
    target TEXT NOT NULL DEFAULT '',
    stage TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    spw TEXT, bytes INTEGER, checksum TEXT, metrics TEXT,
    created_at REAL NOT NULL,
    UNIQUE (path)
);
INSERT INTO products_v3 SELECT id, mous_id, target, stage, kind, path, spw, bytes, checksum,
    metrics, created_at FROM products;
DROP TABLE products;
ALTER TABLE products_v3 RENAME TO products;
CREATE INDEX products_by_mous ON products(mous_id, target, stage);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
UPDATE stages SET reason_code = 'needs_restore'
    WHERE status = 'blocked' AND reason = 'needs calibration restore: only raw ASDMs are available';
UPDATE stages SET reason_code = 'stage' WHERE status = 'blocked' AND reason_code IS NULL;
"""

# v3 runs auto-selfcal as its own MOUS stage. Its row's state comes from the targets' selfcal
# rows as v2 left them: any finished target means the MOUS's run happened (done, never
# redone); else a failed target means it failed (its error kept); else it is still to do.
AUTO_SELFCAL_V3 = """
INSERT INTO stages (mous_id, target, stage, status, error, attempts, started_at, finished_at,
                    updated_at)
SELECT m.mous_id, '', 'auto_selfcal',
    CASE WHEN EXISTS (SELECT 1 FROM stages t WHERE t.mous_id = m.mous_id
                      AND t.stage = 'selfcal' AND t.status IN ('done', 'skipped')) THEN 'done'
         WHEN EXISTS (SELECT 1 FROM stages t WHERE t.mous_id = m.mous_id
                      AND t.stage = 'selfcal' AND t.status = 'failed') THEN 'failed'
         ELSE 'pending' END,
    (SELECT t.error FROM stages t WHERE t.mous_id = m.mous_id AND t.stage = 'selfcal'
         AND t.status = 'failed' AND NOT EXISTS (
             SELECT 1 FROM stages d WHERE d.mous_id = m.mous_id AND d.stage = 'selfcal'
             AND d.status IN ('done', 'skipped')) ORDER BY t.id LIMIT 1),
    COALESCE((SELECT MAX(t.attempts) FROM stages t WHERE t.mous_id = m.mous_id
              AND t.stage = 'selfcal' AND t.status IN ('done', 'skipped', 'failed')), 0),
    (SELECT MIN(t.started_at) FROM stages t WHERE t.mous_id = m.mous_id
         AND t.stage = 'selfcal' AND t.status IN ('done', 'skipped', 'failed')),
    (SELECT MAX(t.finished_at) FROM stages t WHERE t.mous_id = m.mous_id
         AND t.stage = 'selfcal' AND t.status IN ('done', 'skipped', 'failed')),
    ?
FROM mous m WHERE EXISTS (SELECT 1 FROM stages s WHERE s.mous_id = m.mous_id)
    AND NOT EXISTS (SELECT 1 FROM stages s WHERE s.mous_id = m.mous_id
                    AND s.stage = 'auto_selfcal');
"""


def _migrate_v2_to_v3(con: sqlite3.Connection) -> None:
    """v3: stage names checked against the stage table in code (no CHECK list, so adding a
    stage needs no migration); block reasons carry a code; a ``meta`` table; auto-selfcal
    as its own MOUS stage (``auto_selfcal``), its state derived from the targets' rows."""
    run_script(con, STAGES_V3)
    now = time.time()
    con.execute(AUTO_SELFCAL_V3, (now,))
    con.execute(
        "INSERT INTO events (at, mous_id, target, stage, actor, from_status, to_status, reason)"
        " SELECT ?, mous_id, '', 'auto_selfcal', 'migration', NULL, status,"
        " 'created by the v3 migration (state taken from the targets'' selfcal rows)'"
        " FROM stages WHERE stage = 'auto_selfcal'", (now,))


def _migrate_v3_to_v4(con: sqlite3.Connection) -> None:
    """v4: events carry a ``kind`` and JSON ``data`` (human QA verdicts are events of kind
    ``verdict``); a stage row keeps the fingerprint of the per-target overrides it ran with
    (``override_fp``), so a changed override marks exactly that row stale."""
    con.execute("ALTER TABLE events ADD COLUMN kind TEXT")
    con.execute("ALTER TABLE events ADD COLUMN data TEXT")
    con.execute("ALTER TABLE stages ADD COLUMN override_fp TEXT")
    con.execute("CREATE INDEX events_by_kind ON events(kind, mous_id, id)")


SIZES_V5 = """
ALTER TABLE stages ADD COLUMN predicted_peak_bytes INTEGER;
ALTER TABLE stages ADD COLUMN predicted_bytes INTEGER;
ALTER TABLE stages ADD COLUMN measured_bytes INTEGER;
ALTER TABLE stages ADD COLUMN size_basis TEXT;
ALTER TABLE products ADD COLUMN removed_at REAL;
"""


def _migrate_v4_to_v5(con: sqlite3.Connection) -> None:
    """v5: each stage row carries its predicted peak/final bytes beside the measured bytes
    (the size model, :mod:`sails.sizes`); a product removed by cleanup keeps its row with
    ``removed_at`` (the catalog says what was there and when it went)."""
    run_script(con, SIZES_V5)


SOURCES_V6 = f"""
CREATE TABLE sources (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    ra REAL, dec REAL,
    arrays TEXT NOT NULL DEFAULT '[]',
    setups TEXT NOT NULL DEFAULT '[]',
    members_fp TEXT NOT NULL,
    change_reason TEXT,
    changed_at REAL,
    removed_at REAL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE source_members (
    source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    mous_id TEXT NOT NULL REFERENCES mous(mous_id) ON DELETE CASCADE,
    target TEXT NOT NULL,
    array_kind TEXT NOT NULL,
    config TEXT,
    joined_by TEXT NOT NULL,
    windows TEXT NOT NULL DEFAULT '[]',
    added_at REAL NOT NULL,
    PRIMARY KEY (mous_id, target)
);
CREATE INDEX source_members_by_source ON source_members(source_id);
CREATE TABLE source_stages (
    id INTEGER PRIMARY KEY,
    source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    stage TEXT NOT NULL CHECK (stage GLOB '[a-z]*' AND stage NOT GLOB '*[^a-z0-9_]*'),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {_in(V1_STATUSES)}),
    members_fp TEXT NOT NULL,
    reason TEXT, reason_code TEXT, error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT, lease_expires REAL,
    started_at REAL, finished_at REAL, updated_at REAL NOT NULL,
    job_ref TEXT, duration_s REAL,
    UNIQUE (source_id, stage)
);
"""


def _migrate_v5_to_v6(con: sqlite3.Connection) -> None:
    """v6: sources, the targets of different MOUS observing the same sky
    (:mod:`sails.sources`), their membership, and the rows of source-scope stages (each
    keeps the membership fingerprint it stands for: a changed membership resets it). The
    tables start empty: the grouping
    depends on the project's ``[sources]`` rules, so the first regroup (``sails run``,
    ``sails ingest``, ``sails sources``) fills them from the MOUS and targets kept."""
    run_script(con, SOURCES_V6)


SOURCE_PRODUCTS_V7 = """
CREATE TABLE source_products (
    id INTEGER PRIMARY KEY,
    source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    spw TEXT, bytes INTEGER, metrics TEXT,
    members TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL, removed_at REAL,
    UNIQUE (path)
);
CREATE INDEX source_products_by_source ON source_products(source_id, stage);
"""


def _migrate_v6_to_v7(con: sqlite3.Connection) -> None:
    """v7: the products of source-scope stages (joint 12-m + 7-m images, feathered cubes).
    They belong to no one MOUS, so they are not rows of ``products`` (whose ``mous_id`` is a
    MOUS); each keeps the member MOUS, targets and EBs it was made from (``members``, JSON)."""
    run_script(con, SOURCE_PRODUCTS_V7)


# MIGRATIONS[n] brings a version-n catalog to version n+1 (0 = empty file).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    0: _create_v1,
    1: _migrate_v1_to_v2,
    2: _migrate_v2_to_v3,
    3: _migrate_v3_to_v4,
    4: _migrate_v4_to_v5,
    5: _migrate_v5_to_v6,
    6: _migrate_v6_to_v7,
}
SCHEMA_VERSION = 7
