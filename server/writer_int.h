/*
 * writer_int.h -- what the writer's files share (writer.c: the thread, observations, the
 * upkeep; writer_late.c: predictions and labels): the sums one transaction adds, per bucket.
 * Writer thread only.
 */
#ifndef MLS_WRITER_INT_H
#define MLS_WRITER_INT_H

#include "writer.h"

/* The sums of one transaction for one bucket. */
struct slot {
    struct mls_monitor *m;
    const char *combo; /* its key (the first op's, alive until the ops are answered) */
    int64_t start;
    int32_t width;
    struct mls_cell total;
    struct mls_class_sums *classes;
};

struct slots {
    struct slot *items;
    size_t count, cap;
    /* Combo keys the slots point to that no op owns (labels find them in the store): alive
     * until the transaction's slots are freed. */
    char **keys;
    size_t num_keys, cap_keys;
};

void mls_wslots_free(struct slots *sl);
/* key kept by sl (the one it has, or a copy it keeps); NULL when out of memory. */
const char *mls_wslots_key(struct slots *sl, const char *key);
/* The slot of a bucket (m, key, start, width) in sl, with the combo, bucket and hour sum made
 * in memory; NULL with op decided (--max-slice-values, out of memory). values: the combo's
 * slice values, NULL to read them from the key. Slots move when one is added: keep indexes. */
struct slot *mls_wslot_for(struct mls_writer *w, struct slots *sl, struct mls_op *op,
                           struct mls_monitor *m, const char *key, char *const *values,
                           int64_t start, int32_t width);
/* The slot of an observation's bucket. */
struct slot *mls_wslot_of(struct mls_writer *w, struct slots *sl, struct mls_op *op);
/* x += a delta, every part (the class slots with the late part); x += op's delta. */
void mls_wslot_merge(struct slot *x, const struct mls_cell *total,
                     const struct mls_class_sums *classes, int64_t slots);
void mls_wslot_add(struct slot *x, const struct mls_op *op);
/* Whether a[i] + b[i] + c[i] is finite for every i < n. */
int mls_wfinite(const double *a, const double *b, const double *c, size_t n);
/* Whether a delta would make its bucket's sums overflow. */
int mls_wslot_overflows(const struct slot *x, const struct mls_cell *total,
                        const struct mls_class_sums *classes);

/* writer_late.c: a predictions op, a labels op, in the transaction of sl (all or nothing:
 * savepoints; *failed: the store failed); after the commit, the live counts they changed. */
void mls_wlate_predict(struct mls_writer *w, struct slots *sl, struct mls_op *op, int *failed);
void mls_wlate_label(struct mls_writer *w, struct slots *sl, struct mls_op *op, int *failed);
void mls_wlate_counts(struct mls_op *op);

#endif /* MLS_WRITER_INT_H */
