-- 001_init.sql: the monitors' shared state (schema 1). Applied by migrate.sql under
-- pg_advisory_xact_lock, in the transaction that records it in schema_version.
CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO meta VALUES ('byte_order', 'little');

-- One row per monitor name; generation changes on create, replace with ?force=true and
-- delete (a tombstone: config NULL), so that a replica sees "not the monitor I hold".
CREATE SEQUENCE generations;
CREATE TABLE monitors (
    name       text PRIMARY KEY,
    generation bigint NOT NULL UNIQUE,
    config     text,                                        -- normalized JSON; NULL: deleted
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id()   -- last writer (change feed)
);
CREATE INDEX monitors_xid ON monitors (xid);

-- Element-wise sum of two float8 arrays (NULL is zeros): evaluated inside ON CONFLICT DO
-- UPDATE under the row lock, so it is no read-modify-write between replicas.
CREATE FUNCTION mls_addv(a float8[], b float8[]) RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN a IS NULL THEN b WHEN b IS NULL THEN a ELSE
        (SELECT array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i)
           FROM unnest(a, b) WITH ORDINALITY AS u(x, y, i)) END $$;

-- struct mls_bucket: struct mls_cell as columns (ml_sums' 7 + observations), the class
-- slots (mls_class_slots() x MLS_CLASS_FIELDS doubles: per class its 5 sums, then the late
-- part, MLS_LATE_DOUBLES(nc) doubles padded to whole slots) as one float8[].
CREATE TABLE buckets (
    generation bigint NOT NULL,
    combo      text   NOT NULL,
    start      bigint NOT NULL,
    width      int    NOT NULL,
    weighted_sum float8 NOT NULL, denominator float8 NOT NULL, sum_weights float8 NOT NULL,
    num_nonzero_weights float8 NOT NULL, sum_sq float8 NOT NULL, elements float8 NOT NULL,
    samples float8 NOT NULL, observations float8 NOT NULL,
    classes    float8[],
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (generation, combo, start, width)
);
CREATE INDEX buckets_xid ON buckets (xid);

-- Buckets deleted by rollup and retention (a deleted row leaves nothing to poll); purged
-- after a while by the upkeep (a replica that polled longer ago reloads everything).
CREATE TABLE bucket_drops (
    generation bigint NOT NULL, combo text NOT NULL, start bigint NOT NULL, width int NOT NULL,
    at  timestamptz NOT NULL DEFAULT now(),
    xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX bucket_drops_xid ON bucket_drops (xid);

-- Idempotency keys: unique across replicas.
CREATE TABLE ids (
    generation bigint NOT NULL, id text NOT NULL, t bigint NOT NULL,
    PRIMARY KEY (generation, id)
);
CREATE INDEX ids_t ON ids (t);

-- Late labels: stored predictions (pred never reused), their labels, and what each monitor
-- holds now (additive, polled like buckets).
CREATE TABLE predictions (
    pred       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    generation bigint NOT NULL,
    id         text   NOT NULL,
    t          float8 NOT NULL,
    combo      text   NOT NULL,
    outputs    bytea  NOT NULL,
    UNIQUE (generation, id)
);
-- outputs out of line, uncompressed (float outputs do not compress): substring() of a
-- few classes then reads only their TOAST chunks.
ALTER TABLE predictions ALTER COLUMN outputs SET STORAGE EXTERNAL;
CREATE INDEX predictions_t ON predictions (generation, t);
CREATE TABLE labels (
    pred   bigint NOT NULL REFERENCES predictions ON DELETE CASCADE,
    slot   int    NOT NULL,
    value  float8 NOT NULL, weight float8 NOT NULL, first float8 NOT NULL,
    PRIMARY KEY (pred, slot)
);
CREATE TABLE live (
    generation  bigint PRIMARY KEY,
    predictions float8 NOT NULL, positions float8 NOT NULL, labelled float8[],
    xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX live_xid ON live (xid);
