/*
 * writer.c -- group commit of monitor changes (writer.h).
 *
 * Observations that arrive while a commit is running wait in the queue and share the next
 * one: one fsync for all of them, which is what makes durability cheap under load. Within a
 * transaction, the deltas that land in the same bucket are summed first (one upsert each);
 * after the commit memory receives exactly those sums in the same order, so memory and the
 * store hold the same bits, and a restart serves the same figures.
 *
 * Memory is made ready before the commit (combos and buckets created, with zero sums), so
 * that nothing can fail between a durable commit and its application to memory.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uv.h>

#include "writer.h"
#include "writer_int.h"

/* The longest a commit waits for observations on their way (writer.h). */
#define MAX_GATHER_NS 1000000u
/* A shared store is polled this often when nothing asks (other replicas' changes reach memory
 * and /metrics within it; a lost database is noticed within it); a sync waits at most
 * SYNC_WAIT_S for its poll. */
#define POLL_NS 1000000000ull
#define SYNC_WAIT_S 15

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Polls a shared store: memory catches up with the other replicas (writer thread). */
static void poll_store(struct mls_writer *w)
{
    if (!w->store->vt->poll)
        return;
    pthread_mutex_lock(&w->mu);
    uint64_t want = w->sync_want;
    pthread_mutex_unlock(&w->mu);
    int rc = w->store->vt->poll(w->store, w->registry);
    if (rc && !atomic_load(&w->store_down))
        fprintf(stderr, "maskloss-server: the monitors' state is unreachable: %s\n",
                w->store->vt->errmsg(w->store));
    else if (!rc && atomic_load(&w->store_down))
        fprintf(stderr, "maskloss-server: the monitors' state is reachable again\n");
    atomic_store(&w->store_down, rc != 0);
    pthread_mutex_lock(&w->mu);
    w->sync_done = want;
    w->sync_failed = rc != 0;
    w->next_poll_ns = mono_ns() + POLL_NS;
    pthread_cond_broadcast(&w->synced);
    pthread_mutex_unlock(&w->mu);
}

void mls_op_clear(struct mls_op *op)
{
    mls_mconfig_free(&op->cfg);
    mls_monitor_unref(op->monitor);
    op->monitor = NULL;
    free(op->combo_key);
    op->combo_key = NULL;
    for (int k = 0; k < MLS_MAX_SLICE_KEYS; k++) {
        free(op->values[k]);
        op->values[k] = NULL;
    }
    free(op->classes);
    op->classes = NULL;
    for (size_t i = 0; op->ids && i < op->num_rows; i++)
        free(op->ids[i]);
    free(op->ids);
    free(op->outputs);
    free(op->refused);
    free(op->labelled_change);
    op->labelled_change = NULL;
    op->ids = NULL;
    op->outputs = op->refused = NULL;
    for (size_t i = 0; op->labels && i < op->num_labels; i++)
        free(op->labels[i].id);
    free(op->labels);
    op->labels = NULL;
    for (size_t i = 0; i < op->num_unknown_ids; i++)
        free(op->unknown_ids[i]);
    free(op->unknown_ids);
    op->unknown_ids = NULL;
    op->num_rows = op->num_labels = op->num_unknown_ids = 0;
}

static void finish(struct mls_writer *w, struct mls_op *op)
{
    pthread_mutex_lock(&w->mu);
    w->pending--;
    pthread_mutex_unlock(&w->mu);
    op->done(op, op->cls);
}

static void store_failed(struct mls_writer *w, struct mls_op *op)
{
    op->result = MLS_OPR_STORE;
    if (w->commit_unknown)
        snprintf(op->message, sizeof(op->message),
                 "the monitors' state stopped answering after this change was sent to it, so "
                 "it may or may not have been written: %s; retry it with the same id (counted "
                 "once either way)",
                 w->store->vt->errmsg(w->store));
    else
        snprintf(op->message, sizeof(op->message),
                 "the monitors' state could not be written, nothing was counted: %s; retry later",
                 w->store->vt->errmsg(w->store));
}

static struct mls_monitor *current(struct mls_writer *w, const char *name)
{
    /* Only this thread changes the registry: the monitor stays alive after the unref, held
     * by the registry, until this thread removes it. */
    struct mls_monitor *m = mls_registry_get(w->registry, name);
    mls_monitor_unref(m);
    return m;
}

static int begin(struct mls_writer *w)
{
    w->commit_unknown = 0;
    return w->store->vt->begin(w->store);
}

static int commit(struct mls_writer *w)
{
    uint64_t t0 = uv_hrtime();
    int rc = w->store->vt->commit(w->store);
    w->commit_unknown = rc == MLS_STORE_UNKNOWN;
    uint64_t took = uv_hrtime() - t0;
    atomic_fetch_add_explicit(&w->commit_ns, took, memory_order_relaxed);
    pthread_mutex_lock(&w->mu);
    w->last_commit_ns = took;
    pthread_mutex_unlock(&w->mu);
    if (rc) {
        w->store->vt->rollback(w->store);
        atomic_fetch_add_explicit(&w->store_failures, 1, memory_order_relaxed);
        w->next_poll_ns = 0; /* (a shared store: is it reachable?) */
    } else {
        atomic_fetch_add_explicit(&w->commits, 1, memory_order_relaxed);
    }
    return rc;
}

/* ---- put, delete ------------------------------------------------------------------------ */

/* A create of a monitor that exists (config: the one asked for): the same, or a conflict. */
static void exists(struct mls_op *op, const struct mls_monitor *old, const char *config)
{
    op->result = strcmp(old->cfg.json, config) ? MLS_OPR_CONFLICT : MLS_OPR_SAME;
    if (op->result == MLS_OPR_CONFLICT)
        snprintf(op->message, sizeof(op->message),
                 "monitor %s exists with another config (GET /v1/monitors/%s shows it); "
                 "PUT with ?force=true replaces it and clears its data",
                 op->name, op->name);
}

static void do_put(struct mls_writer *w, struct mls_op *op)
{
    struct mls_store *s = w->store;
    struct mls_monitor *old = current(w, op->name);
    if (old && !op->force) {
        exists(op, old, op->cfg.json);
        return;
    }
    if (!old && w->registry->count >= w->registry->limits.max_monitors) {
        op->result = MLS_OPR_LIMIT;
        snprintf(op->message, sizeof(op->message),
                 "the server holds %u monitors, its limit (--max-monitors); delete one first",
                 w->registry->limits.max_monitors);
        return;
    }
    struct mls_monitor *m = mls_monitor_new(op->name, &op->cfg);
    if (!m) {
        op->result = MLS_OPR_NOMEM;
        snprintf(op->message, sizeof(op->message), "out of memory creating monitor %s", op->name);
        return;
    }
    int rc = begin(w) ? -1 : s->vt->put_monitor(s, op->name, m->cfg.json, old || op->force);
    if (rc == 1) {
        /* Another replica created it since the last poll: decided as if it had been here. */
        s->vt->rollback(s);
        poll_store(w);
        struct mls_monitor *now = current(w, op->name);
        if (now) {
            exists(op, now, m->cfg.json);
        } else {
            op->result = MLS_OPR_STORE;
            snprintf(op->message, sizeof(op->message),
                     "monitor %s was being created by another replica; retry", op->name);
        }
        mls_monitor_unref(m);
        return;
    }
    if (rc || commit(w)) {
        s->vt->rollback(s);
        store_failed(w, op);
        mls_monitor_unref(m);
        return;
    }
    if (mls_registry_put(w->registry, m)) {
        /* Durable but not in memory: a restart loads it. Say so rather than pretend. */
        mls_monitor_unref(m);
        op->result = MLS_OPR_NOMEM;
        snprintf(op->message, sizeof(op->message),
                 "monitor %s was stored but the server ran out of memory loading it; it "
                 "appears after a restart",
                 op->name);
        return;
    }
    op->result = old ? MLS_OPR_REPLACED : MLS_OPR_CREATED;
}

static void do_delete(struct mls_writer *w, struct mls_op *op)
{
    struct mls_store *s = w->store;
    if (!current(w, op->name)) {
        op->result = MLS_OPR_NOT_FOUND;
        return;
    }
    int rc = begin(w) ? -1 : s->vt->delete_monitor(s, op->name);
    if (rc == 1) { /* deleted through another replica since the last poll */
        s->vt->rollback(s);
        poll_store(w);
        op->result = MLS_OPR_NOT_FOUND;
        return;
    }
    if (rc || commit(w)) {
        s->vt->rollback(s);
        store_failed(w, op);
        return;
    }
    mls_registry_remove(w->registry, op->name);
    op->result = MLS_OPR_OK;
}

/* ---- observations: one transaction for a run of them ----------------------------------- */

void mls_wslots_free(struct slots *sl)
{
    for (size_t i = 0; i < sl->count; i++)
        free(sl->items[i].classes);
    free(sl->items);
    for (size_t i = 0; i < sl->num_keys; i++)
        free(sl->keys[i]);
    free(sl->keys);
    memset(sl, 0, sizeof(*sl));
}

/* key kept by sl (the one it has, or a copy it keeps); NULL when out of memory. */
const char *mls_wslots_key(struct slots *sl, const char *key)
{
    for (size_t i = 0; i < sl->count; i++)
        if (!strcmp(sl->items[i].combo, key))
            return sl->items[i].combo;
    for (size_t i = 0; i < sl->num_keys; i++)
        if (!strcmp(sl->keys[i], key))
            return sl->keys[i];
    if (sl->num_keys == sl->cap_keys) {
        size_t cap = sl->cap_keys ? sl->cap_keys * 2 : 8;
        char **n = realloc(sl->keys, cap * sizeof(*n));
        if (!n)
            return NULL;
        sl->keys = n;
        sl->cap_keys = cap;
    }
    char *copy = strdup(key);
    if (copy)
        sl->keys[sl->num_keys++] = copy;
    return copy;
}

/* The slot of a bucket (m, key, start, width) in sl, with the combo, bucket and hour sum made
 * in memory; NULL with op decided (--max-slice-values, out of memory). values: the combo's
 * slice values, NULL to read them from the key. */
struct slot *mls_wslot_for(struct mls_writer *w, struct slots *sl, struct mls_op *op,
                           struct mls_monitor *m, const char *key, char *const *values,
                           int64_t start, int32_t width)
{
    int64_t slots = mls_class_slots(&m->cfg);
    int over = 0, made = 0;
    for (size_t i = 0; i < sl->count; i++) {
        struct slot *x = &sl->items[i];
        if (x->m == m && !strcmp(x->combo, key) && x->start == start && x->width == width)
            return x;
    }
    char *parsed[MLS_MAX_SLICE_KEYS] = {0};
    pthread_rwlock_wrlock(&m->lock);
    struct mls_combo *c = mls_monitor_find_combo(m, key);
    if (!c) {
        if (!values && !mls_combo_values(key, m->cfg.num_slice_keys, parsed))
            values = parsed;
        int sliced = 0;
        for (int k = 0; values && k < m->cfg.num_slice_keys; k++)
            sliced |= values[k] != NULL;
        /* The limit is on slice values: observations without any are always one combination,
         * which does not count. */
        unsigned limit = sliced ? w->registry->limits.max_slice_values : UINT_MAX;
        if (sliced && limit < UINT_MAX) {
            char *none[MLS_MAX_SLICE_KEYS] = {0};
            char *nkey = mls_combo_key(none, m->cfg.num_slice_keys);
            limit += nkey && mls_monitor_find_combo(m, nkey);
            free(nkey);
        }
        c = values ? mls_monitor_combo(m, key, values, limit, &over) : NULL;
    }
    struct mls_cell zero;
    memset(&zero, 0, sizeof(zero));
    made = c && !mls_combo_add(m, c, start, width, &zero, NULL, 0) &&
           (width != MLS_BUCKET || !mls_combo_hour_make(m, c, start / MLS_HOUR * MLS_HOUR));
    pthread_rwlock_unlock(&m->lock);
    for (int k = 0; k < MLS_MAX_SLICE_KEYS; k++)
        free(parsed[k]);
    if (over) {
        op->result = MLS_OPR_LIMIT;
        snprintf(op->message, sizeof(op->message),
                 "monitor %s has %u combinations of slice values, the server's limit "
                 "(--max-slice-values); this observation's slice would be a new one",
                 m->name, w->registry->limits.max_slice_values);
        return NULL;
    }
    if (made && sl->count == sl->cap) {
        size_t cap = sl->cap ? sl->cap * 2 : 16;
        struct slot *n = realloc(sl->items, cap * sizeof(*n));
        if (n) {
            sl->items = n;
            sl->cap = cap;
        } else {
            made = 0;
        }
    }
    struct slot *x = made ? &sl->items[sl->count] : NULL;
    if (x) {
        memset(x, 0, sizeof(*x));
        if (slots && !(x->classes = calloc((size_t)slots, sizeof(*x->classes))))
            x = NULL;
    }
    if (!x) {
        op->result = MLS_OPR_NOMEM;
        snprintf(op->message, sizeof(op->message), "out of memory counting an observation");
        return NULL;
    }
    x->m = m;
    x->combo = key;
    x->start = start;
    x->width = width;
    sl->count++;
    return x;
}

/* The slot of an observation's bucket. */
struct slot *mls_wslot_of(struct mls_writer *w, struct slots *sl, struct mls_op *op)
{
    return mls_wslot_for(w, sl, op, op->monitor, op->combo_key, op->values, op->start, op->width);
}

/* x += d, every part (the class slots with the late part). */
void mls_wslot_merge(struct slot *x, const struct mls_cell *total,
                     const struct mls_class_sums *classes, int64_t slots)
{
    ml_sums_add(&x->total.s, &total->s);
    x->total.observations += total->observations;
    double *a = (double *)x->classes;
    const double *d = (const double *)classes;
    for (int64_t i = 0; a && d && i < slots * MLS_CLASS_FIELDS; i++)
        a[i] += d[i];
}

void mls_wslot_add(struct slot *x, const struct mls_op *op)
{
    mls_wslot_merge(x, &op->total, op->classes, mls_class_slots(&op->monitor->cfg));
}

int mls_wfinite(const double *a, const double *b, const double *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i] + b[i] + c[i]))
            return 0;
    return 1;
}

/* Whether a delta would make its bucket's sums overflow (each delta is finite: a monitor
 * keeps only finite sums). Only this thread changes buckets: read without the lock. */
int mls_wslot_overflows(const struct slot *x, const struct mls_cell *total,
                        const struct mls_class_sums *classes)
{
    struct mls_monitor *m = x->m;
    struct mls_combo *c = mls_monitor_find_combo(m, x->combo);
    long b = c ? mls_combo_find(c, x->start, x->width) : -1;
    if (b < 0)
        return 0;
    const struct mls_bucket *bk = &c->buckets[b];
    if (!mls_wfinite((const double *)&bk->total, (const double *)&x->total, (const double *)total,
                     MLS_CELL_FIELDS))
        return 1;
    return bk->classes && x->classes && classes &&
           !mls_wfinite((const double *)bk->classes, (const double *)x->classes,
                        (const double *)classes,
                        (size_t)mls_class_slots(&m->cfg) * MLS_CLASS_FIELDS);
}

static int overflows(const struct slot *x, const struct mls_op *op)
{
    return mls_wslot_overflows(x, &op->total, op->classes);
}

/* Observations from first up to (not including) end, in one transaction. */
static void do_observes(struct mls_writer *w, struct mls_op *first, struct mls_op *end)
{
    struct mls_store *s = w->store;
    struct slots sl = {0};
    int failed = begin(w) != 0;
    for (struct mls_op *op = first; op != end && !failed; op = op->next) {
        struct mls_monitor *cur = current(w, op->name);
        if (!cur) {
            op->result = MLS_OPR_NOT_FOUND;
            continue;
        }
        if (cur != op->monitor) {
            op->result = MLS_OPR_STALE;
            snprintf(op->message, sizeof(op->message),
                     "monitor %s was replaced while this observation was being computed; "
                     "nothing was counted: send it again",
                     op->name);
            continue;
        }
        if (op->kind == MLS_OP_PREDICT) {
            mls_wlate_predict(w, &sl, op, &failed);
            continue;
        }
        if (op->kind == MLS_OP_LABEL) {
            mls_wlate_label(w, &sl, op, &failed);
            continue;
        }
        struct slot *x = mls_wslot_of(w, &sl, op);
        if (!x)
            continue;
        if (overflows(x, op)) {
            op->result = MLS_OPR_OVERFLOW;
            snprintf(op->message, sizeof(op->message),
                     "with this observation the sums of its bucket (monitor %s, %lld) would no "
                     "longer be finite: nothing was counted",
                     op->name, (long long)op->start);
            continue;
        }
        if (op->id[0]) {
            int fresh = s->vt->claim_id(s, op->name, op->id, op->t);
            if (fresh < 0) {
                failed = 1;
                break;
            }
            if (!fresh) {
                op->result = MLS_OPR_DUPLICATE;
                continue;
            }
        }
        mls_wslot_add(x, op);
        op->result = MLS_OPR_OK;
    }
    for (size_t i = 0; i < sl.count && !failed; i++) {
        struct slot *x = &sl.items[i];
        failed = s->vt->add_bucket(s, x->m->name, x->combo, x->start, x->width, &x->total,
                                   x->classes, mls_class_slots(&x->m->cfg)) != 0;
    }
    if (failed || commit(w)) {
        s->vt->rollback(s);
        for (struct mls_op *op = first; op != end; op = op->next)
            if (op->result == MLS_OPR_OK || op->result == MLS_OPR_DUPLICATE)
                store_failed(w, op);
        if (failed)
            atomic_fetch_add_explicit(&w->store_failures, 1, memory_order_relaxed);
        /* What slot_of made ready goes: a combination of slice values that was never
         * committed would show in the figures (until a restart) and count against
         * --max-slice-values, so that new slices were refused once the store came back. */
        for (size_t i = 0; i < sl.count; i++) {
            struct slot *x = &sl.items[i];
            pthread_rwlock_wrlock(&x->m->lock);
            mls_monitor_unmake(x->m, x->combo, x->start, x->width);
            pthread_rwlock_unlock(&x->m->lock);
        }
        mls_wslots_free(&sl);
        return;
    }
    for (size_t i = 0; i < sl.count; i++) {
        struct slot *x = &sl.items[i];
        pthread_rwlock_wrlock(&x->m->lock);
        /* Combo, bucket and hour sum exist (slot_of made them): nothing is allocated. */
        struct mls_combo *c = mls_monitor_find_combo(x->m, x->combo);
        mls_combo_add(x->m, c, x->start, x->width, &x->total, x->classes, 1);
        if (x->width == MLS_BUCKET)
            mls_combo_hour_refresh(x->m, c, x->start / MLS_HOUR * MLS_HOUR);
        pthread_rwlock_unlock(&x->m->lock);
    }
    for (struct mls_op *op = first; op != end; op = op->next) {
        if (op->result == MLS_OPR_OK)
            atomic_fetch_add_explicit(&w->ops_committed, 1, memory_order_relaxed);
        mls_wlate_counts(op);
    }
    mls_wslots_free(&sl);
}

/* Ops that share a transaction: those that add to buckets. */
static int batched(const struct mls_op *op)
{
    return op->kind == MLS_OP_OBSERVE || op->kind == MLS_OP_PREDICT || op->kind == MLS_OP_LABEL;
}

/* An op of a run and where it came in it. */
struct arrival {
    struct mls_op *op;
    size_t at;
};

/* Observations first, by monitor and id; then predictions and labels as they came (a later
 * label of a position replaces an earlier one: their order is kept). */
static int claim_order(const void *pa, const void *pb)
{
    const struct arrival *a = pa, *b = pb;
    int ka = a->op->kind != MLS_OP_OBSERVE, kb = b->op->kind != MLS_OP_OBSERVE;
    if (ka != kb)
        return ka - kb;
    if (!ka) {
        int c = strcmp(a->op->name, b->op->name);
        if (!c)
            c = strcmp(a->op->id, b->op->id);
        if (c)
            return c;
    }
    return (a->at > b->at) - (a->at < b->at);
}

/*
 * A shared store's group commit claims its observations' ids in one order, that of every
 * replica: two replicas holding retries of each other's ids would otherwise wait for each
 * other (a deadlock, and a batch refused 503). Returns the run [op, end) reordered (its new
 * first op), or op as it was when memory is short. (Ops of one run are independent requests;
 * memory and the store add their deltas in the same order either way.)
 */
static struct mls_op *ordered(struct mls_writer *w, struct mls_op *op, struct mls_op *end)
{
    size_t n = 0;
    for (struct mls_op *x = op; x != end; x = x->next)
        n++;
    if (!w->store->vt->poll || n < 2)
        return op;
    struct arrival *v = malloc(n * sizeof(*v));
    if (!v)
        return op;
    n = 0;
    for (struct mls_op *x = op; x != end; x = x->next, n++)
        v[n] = (struct arrival){x, n};
    qsort(v, n, sizeof(*v), claim_order);
    for (size_t i = 0; i < n; i++)
        v[i].op->next = i + 1 < n ? v[i + 1].op : end;
    struct mls_op *first = v[0].op;
    free(v);
    return first;
}

static void process(struct mls_writer *w, struct mls_op *batch)
{
    struct mls_op *op = batch;
    while (op) {
        struct mls_op *end = op;
        if (batched(op)) {
            while (end && batched(end))
                end = end->next;
            op = ordered(w, op, end);
            do_observes(w, op, end);
        } else {
            end = op->next;
            /* Another replica may have made or removed the monitor: decide on the latest. */
            poll_store(w);
            if (op->kind == MLS_OP_PUT)
                do_put(w, op);
            else
                do_delete(w, op);
        }
        while (op != end) {
            struct mls_op *next = op->next;
            finish(w, op); /* may free op */
            op = next;
        }
    }
}

/* ---- upkeep: rollup, retention, old ids ------------------------------------------------- */

struct action {
    struct mls_monitor *m;
    size_t combo;
    int64_t start;
    int32_t width;
    int roll; /* 1: into its hour; 0: dropped; -1: kept (rolling would overflow) */
};

/* What an upkeep deleted of a monitor's predictions (applied to memory after its commit). */
struct expiry {
    struct mls_monitor *m;
    long removed;
    double positions;
    double *labelled;
};

static void expiry_free(struct expiry *ex, size_t n)
{
    for (size_t i = 0; ex && i < n; i++)
        free(ex[i].labelled);
    free(ex);
}

/* What an upkeep has rolled into one hour so far (rolls_finite). */
struct rolled {
    const struct mls_combo *c;
    int64_t hour;
    double *sums; /* the cell's, then the classes' */
    size_t n;
};

/* Whether minute bucket bk added to its hour -- the hour in memory, and the minutes this
 * upkeep rolls into it before -- keeps every sum finite; if so, counts it in r. */
static int rolls_finite(struct mls_monitor *m, const struct mls_combo *c,
                        const struct mls_bucket *bk, struct rolled *r)
{
    int64_t hour = bk->start / MLS_HOUR * MLS_HOUR;
    size_t nc = (size_t)mls_class_slots(&m->cfg) * MLS_CLASS_FIELDS, n = MLS_CELL_FIELDS + nc;
    if (r->c != c || r->hour != hour || r->n != n) {
        free(r->sums);
        if (!(r->sums = calloc(n, sizeof(double)))) {
            r->c = NULL;
            return 0; /* (out of memory: not rolled now, the next upkeep tries again) */
        }
        *r = (struct rolled){c, hour, r->sums, n};
    }
    long h = mls_combo_find(c, hour, MLS_HOUR);
    const struct mls_bucket *hb = h >= 0 ? &c->buckets[h] : NULL;
    for (size_t i = 0; i < n; i++) {
        const double *hs = !hb                   ? NULL
                           : i < MLS_CELL_FIELDS ? (const double *)&hb->total + i
                           : hb->classes ? (const double *)hb->classes + (i - MLS_CELL_FIELDS)
                                         : NULL;
        const double *bs = i < MLS_CELL_FIELDS ? (const double *)&bk->total + i
                           : bk->classes       ? (const double *)bk->classes + (i - MLS_CELL_FIELDS)
                                               : NULL;
        if (!isfinite((hs ? *hs : 0) + r->sums[i] + (bs ? *bs : 0)))
            return 0;
    }
    for (size_t i = 0; i < n; i++) {
        const double *bs = i < MLS_CELL_FIELDS ? (const double *)&bk->total + i
                           : bk->classes       ? (const double *)bk->classes + (i - MLS_CELL_FIELDS)
                                               : NULL;
        r->sums[i] += bs ? *bs : 0;
    }
    return 1;
}

/* Returns when the next upkeep is due. */
static int64_t upkeep(struct mls_writer *w, int64_t now)
{
    int64_t next = now + 60;
    struct mls_store *s = w->store;
    struct mls_registry *g = w->registry;
    struct action *acts = NULL;
    size_t n = 0, cap = 0;
    int failed = 0;
    for (size_t i = 0; i < g->count && !failed; i++) {
        struct mls_monitor *m = g->items[i];
        int64_t drop_before = now - m->cfg.retention;
        int64_t roll_before = now - g->limits.rollup_after;
        for (size_t ci = 0; ci < m->num_combos && !failed; ci++) {
            const struct mls_combo *c = &m->combos[ci];
            for (size_t b = 0; b < c->num_buckets; b++) {
                const struct mls_bucket *bk = &c->buckets[b];
                int drop = bk->start < drop_before;
                int roll = !drop && bk->width == MLS_BUCKET && bk->start < roll_before;
                if (!drop && !roll)
                    continue;
                if (n == cap) {
                    size_t ncap = cap ? cap * 2 : 64;
                    struct action *na = realloc(acts, ncap * sizeof(*na));
                    if (!na) {
                        failed = 1;
                        break;
                    }
                    acts = na;
                    cap = ncap;
                }
                acts[n++] = (struct action){m, ci, bk->start, bk->width, roll};
            }
        }
    }
    if (failed || begin(w)) {
        free(acts);
        s->vt->rollback(s);
        return next;
    }
    failed = s->vt->purge_ids(s, now - MLS_ID_TTL) != 0;
    /* Predictions past their monitor's prediction_ttl, a bounded number at a time. */
    struct expiry *ex = calloc(g->count ? g->count : 1, sizeof(*ex));
    failed |= !ex;
    for (size_t i = 0; i < g->count && !failed; i++) {
        struct mls_monitor *m = g->items[i];
        if (!m->cfg.late)
            continue;
        ex[i].m = m;
        if (!(ex[i].labelled = calloc((size_t)m->cfg.num_classes, sizeof(double)))) {
            failed = 1;
            break;
        }
        int more;
        ex[i].removed = s->vt->expire(s, m->name, (double)(now - m->cfg.prediction_ttl),
                                      ex[i].labelled, m->cfg.num_classes, &ex[i].positions, &more);
        failed = ex[i].removed < 0;
        if (more)
            next = now + 1;
    }
    /* The dead rows of labels (of expired predictions), a bounded run of rows at a time. */
    if (!failed && s->vt->compact(s))
        failed = 1;
    struct rolled rolled = {0};
    for (size_t a = 0; a < n && !failed; a++) {
        struct action *x = &acts[a];
        struct mls_combo *c = &x->m->combos[x->combo];
        long b = mls_combo_find(c, x->start, x->width);
        if (b < 0)
            continue;
        if (x->roll && !rolls_finite(x->m, c, &c->buckets[b], &rolled)) {
            /* Its hour's sums would not be finite: the minute stays a minute (retention drops
             * it in time), rather than an hour of inf -- or, in a store that refuses to sum
             * beyond the largest double, an upkeep that fails as a whole every minute. */
            x->roll = -1;
            continue;
        }
        if (x->roll) {
            int64_t hour = x->start / MLS_HOUR * MLS_HOUR;
            struct mls_bucket *bk = &c->buckets[b];
            if (s->vt->roll_bucket)
                failed = s->vt->roll_bucket(s, x->m->name, c->key, x->start, hour) != 0;
            else
                failed = s->vt->add_bucket(s, x->m->name, c->key, hour, MLS_HOUR, &bk->total,
                                           bk->classes, mls_class_slots(&x->m->cfg)) != 0;
            if (!failed) {
                /* The hour bucket, made before the commit (zero sums). */
                struct mls_cell zero;
                memset(&zero, 0, sizeof(zero));
                pthread_rwlock_wrlock(&x->m->lock);
                failed = mls_combo_add(x->m, c, hour, MLS_HOUR, &zero, NULL, 0) != 0;
                pthread_rwlock_unlock(&x->m->lock);
            }
        }
        if (!failed && !(x->roll && s->vt->roll_bucket))
            failed = s->vt->drop_bucket(s, x->m->name, c->key, x->start, x->width) != 0;
    }
    free(rolled.sums);
    if (failed || commit(w)) {
        /* (tried again at the next upkeep; said, or it fails unseen for good) */
        fprintf(stderr, "maskloss-server: the upkeep of the monitors failed: %s\n",
                s->vt->errmsg(s));
        s->vt->rollback(s);
        free(acts);
        expiry_free(ex, g->count);
        return next;
    }
    for (size_t i = 0; ex && i < g->count; i++) {
        struct mls_monitor *m = ex[i].m;
        if (!m || ex[i].removed <= 0)
            continue;
        pthread_rwlock_wrlock(&m->lock);
        m->predictions_live -= (double)ex[i].removed;
        m->positions_live += ex[i].positions;
        for (int64_t c = 0; m->labelled_live && c < m->cfg.num_classes; c++)
            m->labelled_live[c] += ex[i].labelled[c];
        pthread_rwlock_unlock(&m->lock);
    }
    expiry_free(ex, g->count);
    for (size_t a = 0; a < n; a++) {
        struct action *x = &acts[a];
        struct mls_combo *c = &x->m->combos[x->combo];
        if (x->roll < 0) /* (kept a minute: rolls_finite) */
            continue;
        pthread_rwlock_wrlock(&x->m->lock);
        long b = mls_combo_find(c, x->start, x->width);
        if (b >= 0 && x->roll) {
            long h = mls_combo_find(c, x->start / MLS_HOUR * MLS_HOUR, MLS_HOUR);
            struct mls_bucket *bk = &c->buckets[b];
            if (h >= 0)
                mls_combo_add(x->m, c, c->buckets[h].start, MLS_HOUR, &bk->total, bk->classes, 0);
        }
        if (b >= 0)
            mls_combo_drop(c, (size_t)b);
        if (x->width == MLS_BUCKET)
            mls_combo_hour_refresh(x->m, c, x->start / MLS_HOUR * MLS_HOUR);
        pthread_rwlock_unlock(&x->m->lock);
    }
    free(acts);
    return next;
}

/* ---- the thread --------------------------------------------------------------------------- */

static void *run(void *arg)
{
    struct mls_writer *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        int polls = w->store->vt->poll != NULL;
        while (!w->head && !w->stopping && mls_now() < (double)w->next_upkeep &&
               !(polls && (w->sync_want > w->sync_done || mono_ns() >= w->next_poll_ns))) {
            struct timespec until = {w->next_upkeep, 0};
            if (polls) { /* (the poll's time, in the condition's clock) */
                uint64_t t = mono_ns(), wait = w->next_poll_ns > t ? w->next_poll_ns - t : 0;
                struct timespec now;
                clock_gettime(CLOCK_REALTIME, &now);
                uint64_t at = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec + wait;
                if ((int64_t)(at / 1000000000ull) < w->next_upkeep)
                    until =
                        (struct timespec){(time_t)(at / 1000000000ull), (long)(at % 1000000000ull)};
            }
            pthread_cond_timedwait(&w->cv, &w->mu, &until);
        }
        int poll_due = polls && (w->sync_want > w->sync_done || mono_ns() >= w->next_poll_ns);
        /* Observations on their way share this commit if they come within about one
         * commit's time (bounded: a long computation does not hold the others). */
        if (w->head && w->upstream && !w->stopping) {
            uint64_t wait_ns =
                w->last_commit_ns < MAX_GATHER_NS ? w->last_commit_ns : MAX_GATHER_NS;
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += (long)wait_ns;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            while (w->upstream && !w->stopping &&
                   pthread_cond_timedwait(&w->cv, &w->mu, &until) != ETIMEDOUT)
                ;
        }
        struct mls_op *batch = w->head;
        w->head = w->tail = NULL;
        int stopping = w->stopping;
        pthread_mutex_unlock(&w->mu);
        if (poll_due)
            poll_store(w);
        if (batch)
            process(w, batch);
        int64_t now = (int64_t)floor(mls_now());
        if (now >= w->next_upkeep) {
            w->next_upkeep = upkeep(w, now);
        }
        if (stopping && !batch) {
            pthread_mutex_lock(&w->mu);
            int empty = !w->head;
            pthread_mutex_unlock(&w->mu);
            if (empty)
                break;
        }
    }
    return NULL;
}

int mls_writer_start(struct mls_writer *w, struct mls_store *store, struct mls_registry *g)
{
    memset(w, 0, sizeof(*w));
    w->store = store;
    w->registry = g;
    /* At once: a restart after a long stop has upkeep due. */
    w->next_upkeep = (int64_t)floor(mls_now());
    if (pthread_mutex_init(&w->mu, NULL))
        return -1;
    if (pthread_cond_init(&w->cv, NULL)) {
        pthread_mutex_destroy(&w->mu);
        return -1;
    }
    if (pthread_cond_init(&w->synced, NULL)) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        return -1;
    }
    w->next_poll_ns = mono_ns() + POLL_NS; /* (the load has just read everything) */
    if (pthread_create(&w->thread, NULL, run, w)) {
        pthread_cond_destroy(&w->synced);
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        return -1;
    }
    w->started = 1;
    return 0;
}

/* Appends op (w->mu held). */
static void enqueue(struct mls_writer *w, struct mls_op *op)
{
    op->next = NULL;
    if (w->tail)
        w->tail->next = op;
    else
        w->head = op;
    w->tail = op;
    w->pending++;
}

void mls_writer_submit(struct mls_writer *w, struct mls_op *op)
{
    pthread_mutex_lock(&w->mu);
    enqueue(w, op);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

void mls_writer_expect(struct mls_writer *w)
{
    pthread_mutex_lock(&w->mu);
    w->upstream++;
    pthread_mutex_unlock(&w->mu);
}

void mls_writer_arrive(struct mls_writer *w, struct mls_op *op)
{
    pthread_mutex_lock(&w->mu);
    w->upstream--;
    if (op)
        enqueue(w, op);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int mls_writer_sync(struct mls_writer *w)
{
    if (!w->started || !w->store->vt->poll)
        return 0;
    pthread_mutex_lock(&w->mu);
    /* A poll that starts after this point: concurrent syncs share it. */
    uint64_t want = ++w->sync_want;
    pthread_cond_signal(&w->cv);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += SYNC_WAIT_S;
    int timed_out = 0;
    while (w->sync_done < want && !w->stopping && !timed_out)
        timed_out = pthread_cond_timedwait(&w->synced, &w->mu, &until) == ETIMEDOUT;
    int rc = w->sync_done >= want && !w->sync_failed ? 0 : -1;
    pthread_mutex_unlock(&w->mu);
    return rc;
}

unsigned mls_writer_pending(struct mls_writer *w)
{
    pthread_mutex_lock(&w->mu);
    unsigned n = w->pending;
    pthread_mutex_unlock(&w->mu);
    return n;
}

void mls_writer_stop(struct mls_writer *w)
{
    if (!w->started)
        return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_signal(&w->cv);
    pthread_cond_broadcast(&w->synced);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->synced);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    w->started = 0;
}
