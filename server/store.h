/*
 * store.h -- the durable copy of the monitors, behind an interface: SQLite for one server
 * (store_sqlite.c), PostgreSQL for replicas that share their monitors (store_pg.c).
 *
 * Only the writer thread (writer.c) calls a store after it is loaded. Every change happens
 * inside begin() .. commit(); commit() returns only once the transaction is durable (for
 * SQLite: synchronous=FULL), and a failed call leaves the caller to rollback(). Sums are
 * additive: add_bucket() adds to what the store holds (an upsert), never replaces it, so that
 * the store's figures are the sum of every committed delta in order, as memory's are.
 */
#ifndef MLS_STORE_H
#define MLS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "monitor.h"
#include "state_url.h"

struct mls_store;

struct mls_store_vt {
    /* Reads every monitor and bucket into the (empty) registry, and the counts of stored
     * predictions and labels. 0 or -1 (message in err). */
    int (*load)(struct mls_store *s, struct mls_registry *g, char *err, size_t errlen);
    int (*begin)(struct mls_store *s);
    /* Creates or replaces a monitor's config; clear: also drop its buckets, ids, predictions
     * and labels. Returns 0, -1 on failure, or (a shared store, not clear) 1 when another
     * process has created it meanwhile: nothing written. */
    int (*put_monitor)(struct mls_store *s, const char *name, const char *config, int clear);
    /* 0, -1 on failure, or (a shared store) 1 when another process has deleted it meanwhile. */
    int (*delete_monitor)(struct mls_store *s, const char *name);
    /* Records an idempotency key: 1 when new, 0 when already known, -1 on failure. */
    int (*claim_id)(struct mls_store *s, const char *monitor, const char *id, int64_t t);
    /* (classes: class_slots entries, mls_class_slots(); NULL when none) */
    int (*add_bucket)(struct mls_store *s, const char *monitor, const char *combo, int64_t start,
                      int32_t width, const struct mls_cell *total,
                      const struct mls_class_sums *classes, int64_t class_slots);
    int (*drop_bucket)(struct mls_store *s, const char *monitor, const char *combo, int64_t start,
                       int32_t width);
    /* Moves minute bucket `start` into hour bucket `hour` by the store's own figures (the
     * rollup, where other processes may roll the same minute: only one adds it). May be NULL:
     * then add_bucket(hour, the minute's sums in memory) and drop_bucket(minute). */
    int (*roll_bucket)(struct mls_store *s, const char *monitor, const char *combo, int64_t start,
                       int64_t hour);
    /* Forgets idempotency keys recorded before t. */
    int (*purge_ids)(struct mls_store *s, int64_t before);

    /* ---- Late labels (late.h): stored predictions and their labels ---- */
    /* Stores a prediction's outputs (bytes); 1 stored (its key in *pred), 0 when the monitor
     * has that id already (nothing changed), -1 on failure. */
    int (*put_prediction)(struct mls_store *s, const char *monitor, const char *id, double t,
                          const char *combo, const void *outputs, size_t bytes, int64_t *pred);
    /* Finds a prediction: 1 (its key, time and combo -- the store's, valid while it is
     * open), 0 when there is none, -1 on failure. */
    int (*get_prediction)(struct mls_store *s, const char *monitor, const char *id, int64_t *pred,
                          double *t, const char **combo);
    /* Bytes [offset, offset + bytes) of the outputs of prediction pred, which must be
     * row_bytes long, into out: 0, or -1 on failure (a row of another size fails). */
    int (*read_outputs)(struct mls_store *s, int64_t pred, void *out, size_t offset, size_t bytes,
                        size_t row_bytes);
    /* Hints, for stores that keep an index in memory: get_prediction(id) or get_label(pred,
     * slot) comes soon (a batch of lookups hinted first overlaps their cache misses instead
     * of waiting for each in turn). May be NULL; they change nothing. */
    void (*hint_prediction)(struct mls_store *s, const char *monitor, const char *id);
    void (*hint_label)(struct mls_store *s, int64_t pred, int32_t slot);
    /* The label of a prediction's slot (the class; 0 for per-sample losses): 1 (in *out), 0
     * when it has none, -1 on failure. */
    int (*get_label)(struct mls_store *s, int64_t pred, int32_t slot, struct mls_label *out);
    /* Sets the label of a slot (l->first as given: the caller keeps the first one's). */
    int (*put_label)(struct mls_store *s, int64_t pred, int32_t slot, const struct mls_label *l,
                     double t);
    /* Deletes some of a monitor's predictions made before `before` (*more: 1 when some are
     * left for the next call), with their labels: the count of predictions deleted
     * (labelled[class] -= their labels, *positions -= their count), or -1. */
    long (*expire)(struct mls_store *s, const char *monitor, double before, double *labelled,
                   int64_t num_classes, double *positions, int *more);
    /* Deletes a monitor's prediction of that id if it has expired at `now` (mls_expired), as
     * expire does: 1 deleted, 0 not (absent or live), -1 on failure. */
    int (*drop_prediction)(struct mls_store *s, const char *monitor, const char *id, int64_t ttl,
                           double now, double *labelled, int64_t num_classes, double *positions);
    /* Some housekeeping of the labels' storage, bounded (the upkeep calls it). */
    int (*compact)(struct mls_store *s);
    /* A predictions or labels op starts (before its savepoint): a store shared by processes
     * makes these take turns, so that two processes never hold some of each other's
     * predictions, ids or labels (a deadlock). May be NULL. 0 or -1. */
    int (*late_begin)(struct mls_store *s);
    /* Within a transaction: marks where undo() returns to (one change that must be all or
     * nothing), and forgets the mark (release) once the change is whole. */
    int (*savepoint)(struct mls_store *s);
    int (*release)(struct mls_store *s);
    void (*undo)(struct mls_store *s);
    /* 0: durable. -1: failed, nothing of it was written. MLS_STORE_UNKNOWN: the store
     * stopped answering after the commit was sent, so it may or may not have been written. */
    int (*commit)(struct mls_store *s);
    void (*rollback)(struct mls_store *s);
    /* Stores shared with other processes (NULL for the others): brings the registry up to what
     * they committed (outside a transaction). 0, or -1 (unreachable: memory kept as it was). */
    int (*poll)(struct mls_store *s, struct mls_registry *g);
    /* Why the last call failed, for logs and answers. */
    const char *(*errmsg)(struct mls_store *s);
    void (*close)(struct mls_store *s);
};

#define MLS_STORE_UNKNOWN (-2)

struct mls_store {
    const struct mls_store_vt *vt;
};

/*
 * Opens (creating when absent) the SQLite state at path (":memory:" keeps nothing), keeping up
 * to `cache` bytes of its pages in memory and reading the first `map` bytes of the file
 * through a memory map (0: none; SQLite caps it). Returns 0, or -1 with a message in err. A
 * file that cannot be written is opened all the same: reads (the load) work, and every write
 * fails, which observers see as 503.
 */
int mls_store_open_sqlite(const char *path, uint64_t cache, uint64_t map, struct mls_store **out,
                          char *err, size_t errlen);

/*
 * Connects to the PostgreSQL database of conninfo (libpq's: a URI or keyword/value pairs;
 * the password from it, PGPASSWORD or PGPASSFILE) and creates or migrates its schema. A call
 * that gets no answer within timeout_s seconds fails and drops the connection.
 * Returns 0, or -1 with a message in err (which never holds the password).
 */
int mls_store_open_pg(const char *conninfo, unsigned timeout_s, struct mls_store **out, char *err,
                      size_t errlen);

#endif /* MLS_STORE_H */
