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

/* The longest a commit waits for observations on their way (writer.h). */
#define MAX_GATHER_NS 1000000u

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

static int commit(struct mls_writer *w)
{
    uint64_t t0 = uv_hrtime();
    int rc = w->store->vt->commit(w->store);
    uint64_t took = uv_hrtime() - t0;
    atomic_fetch_add_explicit(&w->commit_ns, took, memory_order_relaxed);
    pthread_mutex_lock(&w->mu);
    w->last_commit_ns = took;
    pthread_mutex_unlock(&w->mu);
    if (rc) {
        w->store->vt->rollback(w->store);
        atomic_fetch_add_explicit(&w->store_failures, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&w->commits, 1, memory_order_relaxed);
    }
    return rc;
}

/* ---- put, delete ------------------------------------------------------------------------ */

static void do_put(struct mls_writer *w, struct mls_op *op)
{
    struct mls_store *s = w->store;
    struct mls_monitor *old = current(w, op->name);
    if (old && !op->force) {
        op->result = strcmp(old->cfg.json, op->cfg.json) ? MLS_OPR_CONFLICT : MLS_OPR_SAME;
        if (op->result == MLS_OPR_CONFLICT)
            snprintf(op->message, sizeof(op->message),
                     "monitor %s exists with another config (GET /v1/monitors/%s shows it); "
                     "PUT with ?force=true replaces it and clears its data",
                     op->name, op->name);
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
    if (s->vt->begin(s) || s->vt->put_monitor(s, op->name, m->cfg.json, old != NULL) || commit(w)) {
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
    if (s->vt->begin(s) || s->vt->delete_monitor(s, op->name) || commit(w)) {
        s->vt->rollback(s);
        store_failed(w, op);
        return;
    }
    mls_registry_remove(w->registry, op->name);
    op->result = MLS_OPR_OK;
}

/* ---- observations: one transaction for a run of them ----------------------------------- */

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
};

static void slots_free(struct slots *sl)
{
    for (size_t i = 0; i < sl->count; i++)
        free(sl->items[i].classes);
    free(sl->items);
    memset(sl, 0, sizeof(*sl));
}

/* The slot of the op's bucket, with the combo and bucket made in memory; NULL: op decided. */
static struct slot *slot_of(struct mls_writer *w, struct slots *sl, struct mls_op *op)
{
    struct mls_monitor *m = op->monitor;
    int64_t nc = m->cfg.num_classes;
    int over, sliced = 0;
    for (int k = 0; k < m->cfg.num_slice_keys; k++)
        sliced |= op->values[k] != NULL;
    /* The limit is on slice values: observations without any are always one combination,
     * which does not count. */
    unsigned limit = sliced ? w->registry->limits.max_slice_values : UINT_MAX;
    pthread_rwlock_wrlock(&m->lock);
    if (sliced && limit < UINT_MAX) {
        char *none[MLS_MAX_SLICE_KEYS] = {0};
        char *key = mls_combo_key(none, m->cfg.num_slice_keys);
        limit += key && mls_monitor_find_combo(m, key);
        free(key);
    }
    struct mls_combo *c = mls_monitor_combo(m, op->combo_key, op->values, limit, &over);
    struct mls_cell zero;
    memset(&zero, 0, sizeof(zero));
    int made =
        c && !mls_combo_add(m, c, op->start, op->width, &zero, NULL, 0) &&
        (op->width != MLS_BUCKET || !mls_combo_hour_make(m, c, op->start / MLS_HOUR * MLS_HOUR));
    pthread_rwlock_unlock(&m->lock);
    if (over) {
        op->result = MLS_OPR_LIMIT;
        snprintf(op->message, sizeof(op->message),
                 "monitor %s has %u combinations of slice values, the server's limit "
                 "(--max-slice-values); this observation's slice would be a new one",
                 m->name, w->registry->limits.max_slice_values);
        return NULL;
    }
    for (size_t i = 0; made && i < sl->count; i++) {
        struct slot *x = &sl->items[i];
        if (x->m == m && !strcmp(x->combo, op->combo_key) && x->start == op->start &&
            x->width == op->width)
            return x;
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
        if (nc && !(x->classes = calloc((size_t)nc, sizeof(*x->classes))))
            x = NULL;
    }
    if (!x) {
        op->result = MLS_OPR_NOMEM;
        snprintf(op->message, sizeof(op->message), "out of memory counting an observation");
        return NULL;
    }
    x->m = m;
    x->combo = op->combo_key;
    x->start = op->start;
    x->width = op->width;
    sl->count++;
    return x;
}

static void slot_add(struct slot *x, const struct mls_op *op)
{
    ml_sums_add(&x->total.s, &op->total.s);
    x->total.observations += op->total.observations;
    for (int64_t i = 0; x->classes && op->classes && i < op->monitor->cfg.num_classes; i++) {
        struct mls_class_sums *a = &x->classes[i];
        const struct mls_class_sums *d = &op->classes[i];
        a->weighted_sum += d->weighted_sum;
        a->denominator += d->denominator;
        a->sum_weights += d->sum_weights;
        a->num_nonzero_weights += d->num_nonzero_weights;
        a->sum_sq += d->sum_sq;
    }
}

static int finite_sum(const double *a, const double *b, const double *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i] + b[i] + c[i]))
            return 0;
    return 1;
}

/* Whether op would make its bucket's sums overflow (each observation's own are finite: a
 * monitor keeps only finite sums). Only this thread changes buckets: read without the lock. */
static int overflows(const struct slot *x, const struct mls_op *op)
{
    struct mls_monitor *m = op->monitor;
    struct mls_combo *c = mls_monitor_find_combo(m, x->combo);
    long b = c ? mls_combo_find(c, x->start, x->width) : -1;
    if (b < 0)
        return 0;
    const struct mls_bucket *bk = &c->buckets[b];
    if (!finite_sum((const double *)&bk->total, (const double *)&x->total,
                    (const double *)&op->total, MLS_CELL_FIELDS))
        return 1;
    return bk->classes && x->classes && op->classes &&
           !finite_sum((const double *)bk->classes, (const double *)x->classes,
                       (const double *)op->classes, (size_t)m->cfg.num_classes * MLS_CLASS_FIELDS);
}

/* Observations from first up to (not including) end, in one transaction. */
static void do_observes(struct mls_writer *w, struct mls_op *first, struct mls_op *end)
{
    struct mls_store *s = w->store;
    struct slots sl = {0};
    int failed = s->vt->begin(s) != 0;
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
        struct slot *x = slot_of(w, &sl, op);
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
        slot_add(x, op);
        op->result = MLS_OPR_OK;
    }
    for (size_t i = 0; i < sl.count && !failed; i++) {
        struct slot *x = &sl.items[i];
        failed = s->vt->add_bucket(s, x->m->name, x->combo, x->start, x->width, &x->total,
                                   x->classes, x->m->cfg.num_classes) != 0;
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
        slots_free(&sl);
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
    for (struct mls_op *op = first; op != end; op = op->next)
        if (op->result == MLS_OPR_OK)
            atomic_fetch_add_explicit(&w->ops_committed, 1, memory_order_relaxed);
    slots_free(&sl);
}

static void process(struct mls_writer *w, struct mls_op *batch)
{
    struct mls_op *op = batch;
    while (op) {
        struct mls_op *end = op;
        if (op->kind == MLS_OP_OBSERVE) {
            while (end && end->kind == MLS_OP_OBSERVE)
                end = end->next;
            do_observes(w, op, end);
        } else {
            end = op->next;
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
    int roll; /* 1: into its hour; 0: dropped */
};

static void upkeep(struct mls_writer *w, int64_t now)
{
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
    if (failed || s->vt->begin(s)) {
        free(acts);
        s->vt->rollback(s);
        return;
    }
    failed = s->vt->purge_ids(s, now - MLS_ID_TTL) != 0;
    for (size_t a = 0; a < n && !failed; a++) {
        struct action *x = &acts[a];
        struct mls_combo *c = &x->m->combos[x->combo];
        long b = mls_combo_find(c, x->start, x->width);
        if (b < 0)
            continue;
        if (x->roll) {
            int64_t hour = x->start / MLS_HOUR * MLS_HOUR;
            struct mls_bucket *bk = &c->buckets[b];
            failed = s->vt->add_bucket(s, x->m->name, c->key, hour, MLS_HOUR, &bk->total,
                                       bk->classes, x->m->cfg.num_classes) != 0;
            if (!failed) {
                /* The hour bucket, made before the commit (zero sums). */
                struct mls_cell zero;
                memset(&zero, 0, sizeof(zero));
                pthread_rwlock_wrlock(&x->m->lock);
                failed = mls_combo_add(x->m, c, hour, MLS_HOUR, &zero, NULL, 0) != 0;
                pthread_rwlock_unlock(&x->m->lock);
            }
        }
        if (!failed)
            failed = s->vt->drop_bucket(s, x->m->name, c->key, x->start, x->width) != 0;
    }
    if (failed || commit(w)) {
        s->vt->rollback(s);
        free(acts);
        return;
    }
    for (size_t a = 0; a < n; a++) {
        struct action *x = &acts[a];
        struct mls_combo *c = &x->m->combos[x->combo];
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
}

/* ---- the thread --------------------------------------------------------------------------- */

static void *run(void *arg)
{
    struct mls_writer *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (!w->head && !w->stopping && time(NULL) < w->next_upkeep) {
            struct timespec until = {w->next_upkeep, 0};
            pthread_cond_timedwait(&w->cv, &w->mu, &until);
        }
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
        if (batch)
            process(w, batch);
        int64_t now = time(NULL);
        if (now >= w->next_upkeep) {
            upkeep(w, now);
            w->next_upkeep = now + 60;
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
    w->next_upkeep = time(NULL); /* at once: a restart after a long stop has upkeep due */
    if (pthread_mutex_init(&w->mu, NULL))
        return -1;
    if (pthread_cond_init(&w->cv, NULL)) {
        pthread_mutex_destroy(&w->mu);
        return -1;
    }
    if (pthread_create(&w->thread, NULL, run, w)) {
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
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    w->started = 0;
}
