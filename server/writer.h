/*
 * writer.h -- the one thread that changes monitors: it takes every change waiting in its
 * queue, writes them to the store in one transaction (group commit), and only once that is
 * durable applies them to memory and answers each (op->done). Also, about once a minute,
 * the upkeep: minute buckets older than --rollup-after merged into hours, buckets past a
 * monitor's retention and idempotency keys past MLS_ID_TTL dropped.
 */
#ifndef MLS_WRITER_H
#define MLS_WRITER_H

#include <pthread.h>
#include <stdint.h>

#include "monitor.h"
#include "store.h"

enum mls_op_kind { MLS_OP_PUT, MLS_OP_DELETE, MLS_OP_OBSERVE, MLS_OP_PREDICT, MLS_OP_LABEL };

/* How an op ended. */
enum mls_op_result {
    MLS_OPR_OK,        /* observe counted; delete done */
    MLS_OPR_CREATED,   /* put: a new monitor */
    MLS_OPR_SAME,      /* put: the same config was there */
    MLS_OPR_REPLACED,  /* put with force: replaced and cleared */
    MLS_OPR_DUPLICATE, /* observe: its id was already counted */
    MLS_OPR_CONFLICT,  /* put: another config is there (no force) */
    MLS_OPR_NOT_FOUND, /* delete, observe: no such monitor */
    MLS_OPR_STALE,     /* observe: the monitor was replaced or deleted meanwhile */
    MLS_OPR_LIMIT,     /* put: --max-monitors; observe: --max-slice-values */
    MLS_OPR_OVERFLOW,  /* observe: its bucket's sums would no longer be finite */
    MLS_OPR_INVALID,   /* labels: a row could not be evaluated (422, message says why) */
    MLS_OPR_STORE,     /* the store failed (disk full, read-only, I/O): 503 */
    MLS_OPR_NOMEM      /* out of memory: 503 */
};

struct mls_op {
    struct mls_op *next;
    enum mls_op_kind kind;
    char name[MLS_MONITOR_NAME_MAX + 1];
    /* put */
    struct mls_mconfig cfg; /* moved into the monitor when it is created */
    int force;
    /* observe: the monitor it was computed for (a reference), and its delta */
    struct mls_monitor *monitor;
    char *combo_key;
    char *values[MLS_MAX_SLICE_KEYS];
    int64_t start;
    int32_t width;
    struct mls_cell total;
    struct mls_class_sums *classes; /* num_classes, owned */
    char id[MLS_ID_MAX + 1];        /* "" when none */
    int64_t t;                      /* event time (for the id's age) */
    /* predict: num_rows rows of outputs (row_bytes each) and their ids; the sums of one
     * unlabelled row (total and classes above, per row); refused[i]: 0 stored, 1 the id was
     * stored already, 2 repeated in the request (set by the caller) */
    size_t num_rows, row_bytes;
    char **ids;
    void *outputs;
    double time;
    unsigned char *refused;
    size_t stored;
    /* predict and label: what the op changes of the monitor's live counts, applied after the
     * commit (a predict op deletes expired predictions of its ids to store them again, and
     * their labels with them): predictions, labelled positions, per class (num_classes). */
    double predictions_change, positions_change;
    double *labelled_change;
    /* label: the labels in the order given, at time `time` */
    struct mls_label_in *labels;
    size_t num_labels;
    size_t applied, replaced, unknown;
    char **unknown_ids; /* distinct, at most MLS_UNKNOWN_IDS */
    size_t num_unknown_ids;
    /* outcome, set before done() */
    enum mls_op_result result;
    char message[512];
    char field[64]; /* the request's field a refusal names, "" for the route's default */
    /* Called on the writer thread once the op is decided (and durable when it changed
     * anything). The op may be freed by it. */
    void (*done)(struct mls_op *op, void *cls);
    void *cls;
};

/* A label as a request gives it: the prediction's id, its slot (the class for elementwise
 * losses, 0 for per-sample ones) and the label. */
struct mls_label_in {
    char *id;
    int32_t slot;
    struct mls_label l;
    /* where the request gave it, for errors: labels[row], or labels[row][col] (col >= 0) */
    int64_t row;
    int32_t col;
};
/* Sorts an op's labels by id, then in the order the request gave them (labels[row][col]):
 * one prediction's labels together, the last given for a class last (it wins). The route
 * calls it on a worker; the writer calls it again, which then only checks, in one pass. */
void mls_op_sort_labels(struct mls_op *op);
/* The largest weight a label may have, and the largest |weight x loss| of one labelled
 * position: a label given again is replaced by subtracting its old contribution from sums
 * that hold others, exact to within 2^-53 of what is subtracted. Within these bounds that is
 * below 1e-4 absolute, and below 1e-12 of the usual weights (about 1) and losses. */
#define MLS_LABEL_WEIGHT_MAX 1e6
#define MLS_CONTRIBUTION_MAX 1e12
#define MLS_UNKNOWN_IDS 100

/* Frees what an op owns (not the op itself). */
void mls_op_clear(struct mls_op *op);

struct mls_writer {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct mls_op *head, *tail;
    unsigned pending; /* submitted, not yet done */
    int stopping;
    int started;
    struct mls_store *store;
    struct mls_registry *registry;
    int64_t next_upkeep;
    /* Observations accepted by the HTTP side and not yet submitted (queued or computing): a
     * commit waits a little for them, so that they share its fsync (mls_writer_expect). */
    unsigned upstream;
    uint64_t last_commit_ns;
    int commit_unknown; /* the last commit's outcome is unknown (MLS_STORE_UNKNOWN) */
    /* A store shared with other replicas (store->vt->poll): the writer polls it about once a
     * POLL_NS, and at once for a mls_writer_sync() (sync_want > sync_done). */
    uint64_t sync_want, sync_done;
    int sync_failed;        /* the last poll failed */
    pthread_cond_t synced;  /* sync_done moved */
    uint64_t next_poll_ns;  /* CLOCK_MONOTONIC */
    _Atomic int store_down; /* the last poll failed: /readyz answers 503 */
    /* Counters for /metrics (writer thread writes, readers load relaxed). */
    _Atomic uint64_t commits, ops_committed, store_failures;
    _Atomic uint64_t commit_ns; /* total time in commits */
};

int mls_writer_start(struct mls_writer *w, struct mls_store *store, struct mls_registry *g);
/* Queues an op; its done() will be called on the writer thread. */
void mls_writer_submit(struct mls_writer *w, struct mls_op *op);

/*
 * Group commit's look-ahead. mls_writer_expect() says an observation was accepted and will
 * reach the writer after its computation; it is matched by one mls_writer_arrive(): with the
 * op (submitted), or NULL when it was answered without the writer. A commit about to start
 * waits for expected observations (at most about one commit's time), so that under load more
 * of them share one fsync; without them it starts at once.
 */
void mls_writer_expect(struct mls_writer *w);
void mls_writer_arrive(struct mls_writer *w, struct mls_op *op);
/* With a store shared by replicas: waits until memory holds every change committed before
 * the call (by any replica). 0, or -1 when the store cannot be reached. Returns 0 at once for
 * a store of this process alone. Not on the writer thread. */
int mls_writer_sync(struct mls_writer *w);
/* Ops submitted and not yet answered. */
unsigned mls_writer_pending(struct mls_writer *w);
/* Finishes what is queued, then stops the thread. */
void mls_writer_stop(struct mls_writer *w);

#endif /* MLS_WRITER_H */
