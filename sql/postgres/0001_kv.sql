-- Kelp's etcd-semantics store on PostgreSQL, shared by several processes. Revisions are
-- gapless and equal commit order: every write transaction first locks the kv_meta row (an
-- UPDATE in READ COMMITTED), so writers are serialized cluster-wide and a later revision
-- can never become visible before an earlier one. No sequences, no gap filling.
-- Keys are bytea: they sort bytewise, as etcd's do, whatever the database collation.

CREATE TABLE kv_meta (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    rev BIGINT  NOT NULL
);
INSERT INTO kv_meta (id, rev) VALUES (1, 0);

-- Kept apart from kv_meta so that compaction does not contend with writers for its row.
CREATE TABLE kv_compaction (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    rev BIGINT  NOT NULL
);
INSERT INTO kv_compaction (id, rev) VALUES (1, 0);

CREATE TABLE kv_log (
    rev        BIGINT PRIMARY KEY,
    key        BYTEA  NOT NULL,
    create_rev BIGINT NOT NULL,
    prev_rev   BIGINT NOT NULL,
    version    BIGINT NOT NULL,
    lease      BIGINT NOT NULL,
    deleted    BIGINT NOT NULL,
    value      BYTEA  NOT NULL
);
CREATE INDEX kv_log_key_rev ON kv_log (key, rev);
-- The log is deleted from by compaction all the time: vacuum it early.
ALTER TABLE kv_log SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.05);

CREATE TABLE kv_current (
    key        BYTEA  PRIMARY KEY,
    create_rev BIGINT NOT NULL,
    mod_rev    BIGINT NOT NULL,
    version    BIGINT NOT NULL,
    lease      BIGINT NOT NULL,
    value      BYTEA  NOT NULL
);
CREATE INDEX kv_current_lease ON kv_current (lease) WHERE lease <> 0;

CREATE TABLE kv_lease (
    id            BIGINT PRIMARY KEY,
    ttl           BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
CREATE INDEX kv_lease_expiry ON kv_lease (expires_at_ms);
