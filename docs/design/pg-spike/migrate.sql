-- What the server does at start (in C), as a psql script: every migration not yet applied,
-- in one transaction, under a transaction-level advisory lock (released by COMMIT).
BEGIN;
SELECT pg_advisory_xact_lock(:lock);
CREATE TABLE IF NOT EXISTS schema_version (
    version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
SELECT coalesce(max(version), 0) < 1 AS need1 FROM schema_version \gset
\if :need1
SELECT pg_sleep(1);  -- (a slow migration: widens the race window for the test)
\i migrations/001_init.sql
INSERT INTO schema_version(version, name) VALUES (1, '001_init.sql');
\echo applied 001_init.sql
\else
\echo 001_init.sql already applied
\endif
COMMIT;
