-- Kelp's etcd-semantics store on SQLite. Revisions are gapless and equal commit order:
-- every write transaction runs under SQLite's single write lock (BEGIN IMMEDIATE) and
-- advances kv_meta.rev by the number of writes it commits.

-- Head revision: the revision of the last committed write.
CREATE TABLE kv_meta (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    rev INTEGER NOT NULL
);
INSERT INTO kv_meta (id, rev) VALUES (1, 0);

-- Compact revision: reads below it and watches starting below it fail as compacted.
CREATE TABLE kv_compaction (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    rev INTEGER NOT NULL
);
INSERT INTO kv_compaction (id, rev) VALUES (1, 0);

-- Append-only history, one row per write. prev_rev is the key's previous row (0 for a
-- create), so watch events carry the previous value through a join.
CREATE TABLE kv_log (
    rev        INTEGER PRIMARY KEY,
    key        BLOB    NOT NULL,
    create_rev INTEGER NOT NULL,
    prev_rev   INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    lease      INTEGER NOT NULL,
    deleted    INTEGER NOT NULL,
    value      BLOB    NOT NULL
);
CREATE INDEX kv_log_key_rev ON kv_log (key, rev);

-- The live keys at the head, kept in the same transaction as kv_log, so reads at the head
-- are index range scans bounded by their LIMIT.
CREATE TABLE kv_current (
    key        BLOB    PRIMARY KEY,
    create_rev INTEGER NOT NULL,
    mod_rev    INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    lease      INTEGER NOT NULL,
    value      BLOB    NOT NULL
);
CREATE INDEX kv_current_lease ON kv_current (lease) WHERE lease <> 0;

-- Leases: keys attached to an expired or revoked lease are deleted.
CREATE TABLE kv_lease (
    id            INTEGER PRIMARY KEY,
    ttl           INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE INDEX kv_lease_expiry ON kv_lease (expires_at_ms);
