/*
 * label_index.h -- where the label of each (prediction, slot) is in the store: an open-
 * addressing hash table in memory, with an undo log so that it follows the store's
 * transactions (savepoints, commit, rollback).
 *
 * Why in memory: a label arrives for a random prediction among millions. A B-tree keyed by
 * prediction (an SQLite index or table) takes each new label on a random page, and a WAL
 * commit writes every page it changed whole: thousands of labels per commit wrote thousands
 * of 4 KiB pages. The labels are appended to a table in arrival order instead (a few
 * labels per page, pages written once), and this index finds them: 56 bytes per label,
 * rebuilt from that table at start.
 */
#ifndef MLS_LABEL_INDEX_H
#define MLS_LABEL_INDEX_H

#include <stddef.h>
#include <stdint.h>

/* The label itself is kept too, so that a label given again needs no read of its row.
 * (store_sqlite.c keeps its predictions' ids in a table of the same kind: there pred is the
 * id's hash, slot an ordinal among equal hashes, lid the row, cls the slice combination,
 * value the time, and check a second hash of the id.) */
struct mls_lx_entry {
    int64_t pred; /* the prediction's key; 0: an empty bucket */
    int64_t lid;  /* the label's row */
    int32_t slot; /* the class, or 0 for a per-sample loss */
    int32_t cls;  /* the labelled class */
    double value, weight, first;
    uint64_t check;
};

struct mls_lx_undo {
    struct mls_lx_entry was; /* the entry before the change (lid 0: there was none) */
};

struct mls_lx {
    struct mls_lx_entry *table;
    size_t cap, count; /* cap: a power of two, or 0 */
    struct mls_lx_undo *log;
    size_t log_len, log_cap;
    size_t marks[8]; /* savepoints: log lengths */
    int num_marks;
    int logging; /* inside a transaction: changes are logged */
};

void mls_lx_init(struct mls_lx *x);
void mls_lx_free(struct mls_lx *x);

/* The entry of (pred, slot), or NULL. Valid until the next change. */
const struct mls_lx_entry *mls_lx_get(const struct mls_lx *x, int64_t pred, int32_t slot);
/* Starts fetching the bucket of (pred, slot) into the CPU's cache, for a lookup soon: the
 * table is far larger than the cache, each lookup a miss, and misses hinted in a batch
 * overlap. Changes nothing. */
void mls_lx_prefetch(const struct mls_lx *x, int64_t pred, int32_t slot);
/* Sets (pred, slot) to e's row and label (e->pred, e->slot are the key), inserting it when
 * absent. 0, or -1 out of memory (then nothing changed). The key's pred must be > 0. */
int mls_lx_put(struct mls_lx *x, const struct mls_lx_entry *e);
/* Removes (pred, slot) when present. 0, or -1 out of memory for the undo log (nothing
 * changed). */
int mls_lx_del(struct mls_lx *x, int64_t pred, int32_t slot);

/* Transactions: begin (log from here), mark (a savepoint; at most 8 nested), undo (back to
 * the last mark, which goes), release (the last mark goes, its changes stay), commit (the
 * log is forgotten), rollback (every change since begin undone). */
void mls_lx_begin(struct mls_lx *x);
int mls_lx_mark(struct mls_lx *x);
void mls_lx_undo(struct mls_lx *x);
void mls_lx_release(struct mls_lx *x);
void mls_lx_commit(struct mls_lx *x);
void mls_lx_rollback(struct mls_lx *x);

#endif /* MLS_LABEL_INDEX_H */
