-- maskloss-server's state on PostgreSQL, schema 1 (server/store_pg.c; docs/design/pg-store.md).
--
-- A monitor's data is keyed by its generation, new whenever the monitor is created, replaced
-- (?force=true) or deleted: the old generation's rows are garbage nobody reads, deleted later
-- by the upkeep. Every row the replicas keep in memory carries xid, the transaction that last
-- wrote it: the change feed (a poll) reads the rows written since its previous snapshot.

CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);

CREATE SEQUENCE generations;

CREATE TABLE monitors (
    name       text PRIMARY KEY,
    generation bigint NOT NULL UNIQUE,
    config     text,                                        -- normalized JSON; NULL: deleted
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX monitors_xid ON monitors (xid);

-- a + b element by element (NULL and a shorter array's tail count as zeros), evaluated under
-- the row lock of ON CONFLICT DO UPDATE: replicas never read-modify-write each other's sums.
-- A loop over an expanded array: 7-9 ms for 25,000 doubles (a bucket of 1000 classes with
-- late labels), against 15-21 ms for the same in SQL with unnest ... WITH ORDINALITY.
CREATE FUNCTION mls_addv(a float8[], b float8[]) RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    n int;
    r float8[];
BEGIN
    IF a IS NULL THEN RETURN b; END IF;
    IF b IS NULL THEN RETURN a; END IF;
    n := greatest(cardinality(a), cardinality(b));
    r := array_fill(0::float8, ARRAY[n]);
    FOR i IN 1..n LOOP
        r[i] := coalesce(a[i], 0) + coalesce(b[i], 0);
    END LOOP;
    RETURN r;
END $$;

-- struct mls_bucket: total is a struct mls_cell (8 doubles), classes the monitor's class
-- slots (mls_class_slots() x 5 doubles), as in memory.
CREATE TABLE buckets (
    generation bigint NOT NULL,
    combo      text NOT NULL,
    start      bigint NOT NULL,
    width      int NOT NULL,
    total      float8[] NOT NULL,
    classes    float8[],
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (generation, combo, start, width)
);
CREATE INDEX buckets_xid ON buckets (xid);

-- Buckets deleted by the rollup or the retention, for the feed; purged after a while.
CREATE TABLE bucket_drops (
    generation bigint NOT NULL,
    combo      text NOT NULL,
    start      bigint NOT NULL,
    width      int NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX bucket_drops_xid ON bucket_drops (xid);

-- Idempotency keys: unique in the database, so that a retry on another replica is a duplicate.
CREATE TABLE ids (
    generation bigint NOT NULL,
    id         text NOT NULL,
    t          bigint NOT NULL,
    PRIMARY KEY (generation, id)
);
CREATE INDEX ids_t ON ids (t);

-- Late labels: stored predictions (outputs: raw native doubles or floats, uncompressed so that
-- substring() reads only the chunks it needs) and their labels.
CREATE TABLE predictions (
    pred       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- never reused
    generation bigint NOT NULL,
    id         text NOT NULL,
    t          float8 NOT NULL,
    combo      text NOT NULL,
    outputs    bytea NOT NULL,
    UNIQUE (generation, id)
);
ALTER TABLE predictions ALTER COLUMN outputs SET STORAGE EXTERNAL;
CREATE INDEX predictions_t ON predictions (generation, t);

CREATE TABLE labels (
    pred   bigint NOT NULL,
    slot   int NOT NULL,
    cls    int NOT NULL,
    value  float8 NOT NULL,
    weight float8 NOT NULL,
    first  float8 NOT NULL,
    t      float8 NOT NULL,
    PRIMARY KEY (pred, slot)
);

-- A monitor's stored predictions and labelled positions (in all and per class): additive.
CREATE TABLE live (
    generation  bigint PRIMARY KEY,
    predictions float8 NOT NULL,
    positions   float8 NOT NULL,
    labelled    float8[],
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX live_xid ON live (xid);

-- Generations left by a replace or a delete: the upkeep deletes their rows, a batch at a time,
-- then the generation from here.
CREATE TABLE dead_generations (generation bigint PRIMARY KEY);
