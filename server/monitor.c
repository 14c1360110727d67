/*
 * monitor.c -- the in-memory model of monitors: the registry, each monitor's combinations of
 * slice values, and their time buckets. Only the writer thread changes it (monitor.h).
 */
/* pthread_rwlockattr_setkind_np (glibc) is declared for _GNU_SOURCE only. */
#define _GNU_SOURCE 1
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "monitor.h"

int mls_monitor_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n < 1 || n > MLS_MONITOR_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)name[i]) || name[i] == '_' || name[i] == '.' ||
              name[i] == '-'))
            return 0;
    return 1;
}

/*
 * A monitor's lock prefers its writer: glibc's default lets new readers in while the writer
 * waits, and queries that overlap (GETs of a thousand classes take a second or more) kept the
 * one writer thread waiting for ever, and with it every observation of every monitor. A
 * waiting writer now waits only for the queries already running. (No thread takes a monitor's
 * read lock twice, which the non-recursive kind requires.)
 */
static int lock_init(pthread_rwlock_t *lock)
{
#ifdef __GLIBC__
    pthread_rwlockattr_t attr;
    if (pthread_rwlockattr_init(&attr))
        return -1;
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    return rc;
#else
    return pthread_rwlock_init(lock, NULL);
#endif
}

/* The row evaluation's context of a monitor that takes predictions; 0, or -1 out of memory
 * (its params were checked when the config was parsed). */
static int late_init(struct mls_monitor *m)
{
    const struct mls_mconfig *cfg = &m->cfg;
    struct mlp_error err;
    if (cfg->params && mlp_params_decode(cfg->params, &m->late_params, &err))
        return -1;
    if (!(m->labelled_live = calloc((size_t)cfg->num_classes, sizeof(double))))
        return -1;
    const struct ml_loss_info *info = ml_loss_find(cfg->loss);
    const json_t *from_logits = cfg->params ? json_object_get(cfg->params, "from_logits") : NULL;
    const json_t *ignore = cfg->params ? json_object_get(cfg->params, "ignore_index") : NULL;
    m->late = (struct mls_late_ctx){
        .loss = cfg->loss,
        .reduction = cfg->reduction,
        .kind = cfg->late,
        .dtype = cfg->f64 ? ML_FLOAT64 : ML_FLOAT32,
        .predictions = info->input == ML_INPUT_PREDICTIONS ||
                       (info->input == ML_INPUT_KERAS && !json_is_true(from_logits)),
        .num_classes = cfg->num_classes,
        .ignore_index = json_is_number(ignore) ? json_number_value(ignore) : -100,
        .params = m->late_params.params,
        .num_params = m->late_params.num_params,
    };
    return 0;
}

struct mls_monitor *mls_monitor_new(const char *name, struct mls_mconfig *cfg)
{
    struct mls_monitor *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    if (lock_init(&m->lock)) {
        free(m);
        return NULL;
    }
    atomic_init(&m->refs, 1);
    snprintf(m->name, sizeof(m->name), "%s", name);
    m->cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    if (m->cfg.late && late_init(m)) {
        mls_monitor_unref(m);
        return NULL;
    }
    return m;
}

static void combo_free(const struct mls_monitor *m, struct mls_combo *c)
{
    for (size_t i = 0; i < c->num_buckets; i++)
        free(c->buckets[i].classes);
    free(c->buckets);
    for (size_t i = 0; i < c->num_hours; i++)
        free(c->hours[i].classes);
    free(c->hours);
    for (int k = 0; c->values && k < m->cfg.num_slice_keys; k++)
        free(c->values[k]);
    free(c->values);
    free(c->key);
    free(c->ingested_classes);
}

void mls_monitor_ref(struct mls_monitor *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void mls_monitor_unref(struct mls_monitor *m)
{
    if (!m || atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < m->num_combos; i++)
        combo_free(m, &m->combos[i]);
    free(m->combos);
    mlp_request_free(&m->late_params);
    free(m->labelled_live);
    mls_mconfig_free(&m->cfg);
    pthread_rwlock_destroy(&m->lock);
    free(m);
}

/* The index of the combo of key in m (sorted by key), or where it would go (*found = 0). */
static size_t combo_find(const struct mls_monitor *m, const char *key, int *found)
{
    size_t lo = 0, hi = m->num_combos;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(m->combos[mid].key, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < m->num_combos && !strcmp(m->combos[lo].key, key);
    return lo;
}

struct mls_combo *mls_monitor_find_combo(struct mls_monitor *m, const char *key)
{
    int found;
    size_t i = combo_find(m, key, &found);
    return found ? &m->combos[i] : NULL;
}

/* Combos are kept in the order of their keys, the order the store loads them in: figures add
 * them up in that order, so a restart gives the same bits. */
struct mls_combo *mls_monitor_combo(struct mls_monitor *m, const char *key, char *const *values,
                                    unsigned max_combos, int *over_limit)
{
    int found;
    *over_limit = 0;
    size_t at = combo_find(m, key, &found);
    if (found)
        return &m->combos[at];
    if (m->num_combos >= max_combos) {
        *over_limit = 1;
        return NULL;
    }
    if (m->num_combos == m->cap_combos) {
        size_t cap = m->cap_combos ? m->cap_combos * 2 : 4;
        struct mls_combo *n = realloc(m->combos, cap * sizeof(*n));
        if (!n)
            return NULL;
        m->combos = n;
        m->cap_combos = cap;
    }
    struct mls_combo made;
    memset(&made, 0, sizeof(made));
    int nk = m->cfg.num_slice_keys;
    made.key = strdup(key);
    made.values = calloc(nk > 0 ? (size_t)nk : 1, sizeof(char *));
    int64_t slots = mls_class_slots(&m->cfg);
    if (slots)
        made.ingested_classes = calloc((size_t)slots, sizeof(struct mls_class_sums));
    int ok = made.key && made.values && (!slots || made.ingested_classes);
    for (int k = 0; ok && k < nk; k++)
        if (values[k] && !(made.values[k] = strdup(values[k])))
            ok = 0;
    if (!ok) {
        combo_free(m, &made);
        return NULL;
    }
    memmove(&m->combos[at + 1], &m->combos[at], (m->num_combos - at) * sizeof(*m->combos));
    m->combos[at] = made;
    m->num_combos++;
    return &m->combos[at];
}

void mls_bucket_of(double t, int64_t now, int64_t rollup_after, int64_t *start, int32_t *width)
{
    int64_t sec = (int64_t)floor(t);
    int64_t minute = sec / MLS_BUCKET * MLS_BUCKET;
    if (minute < now - rollup_after) {
        *start = sec / MLS_HOUR * MLS_HOUR;
        *width = MLS_HOUR;
    } else {
        *start = minute;
        *width = MLS_BUCKET;
    }
}

/* The index of the bucket (start, width), or where it would go (*found = 0). */
static size_t bucket_find(const struct mls_combo *c, int64_t start, int32_t width, int *found)
{
    size_t lo = 0, hi = c->num_buckets;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct mls_bucket *b = &c->buckets[mid];
        if (b->start < start || (b->start == start && b->width < width))
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < c->num_buckets && c->buckets[lo].start == start && c->buckets[lo].width == width;
    return lo;
}

static void cell_add(struct mls_cell *into, const struct mls_cell *d)
{
    ml_sums_add(&into->s, &d->s);
    into->observations += d->observations;
}

static void classes_add(struct mls_class_sums *into, const struct mls_class_sums *d, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        into[i].weighted_sum += d[i].weighted_sum;
        into[i].denominator += d[i].denominator;
        into[i].sum_weights += d[i].sum_weights;
        into[i].num_nonzero_weights += d[i].num_nonzero_weights;
        into[i].sum_sq += d[i].sum_sq;
    }
}

int mls_combo_add(struct mls_monitor *m, struct mls_combo *c, int64_t start, int32_t width,
                  const struct mls_cell *total, const struct mls_class_sums *classes, int ingested)
{
    int64_t nc = mls_class_slots(&m->cfg);
    int found;
    size_t i = bucket_find(c, start, width, &found);
    if (!found) {
        struct mls_class_sums *cl = NULL;
        if (nc && !(cl = calloc((size_t)nc, sizeof(*cl))))
            return -1;
        if (c->num_buckets == c->cap_buckets) {
            size_t cap = c->cap_buckets ? c->cap_buckets * 2 : 16;
            struct mls_bucket *n = realloc(c->buckets, cap * sizeof(*n));
            if (!n) {
                free(cl);
                return -1;
            }
            c->buckets = n;
            c->cap_buckets = cap;
        }
        memmove(&c->buckets[i + 1], &c->buckets[i], (c->num_buckets - i) * sizeof(*c->buckets));
        c->num_buckets++;
        memset(&c->buckets[i], 0, sizeof(c->buckets[i]));
        c->buckets[i].start = start;
        c->buckets[i].width = width;
        c->buckets[i].classes = cl;
    }
    struct mls_bucket *b = &c->buckets[i];
    cell_add(&b->total, total);
    if (nc && classes)
        classes_add(b->classes, classes, nc);
    if (ingested) {
        cell_add(&c->ingested, total);
        if (nc && classes)
            classes_add(c->ingested_classes, classes, nc);
    }
    return 0;
}

long mls_combo_find(const struct mls_combo *c, int64_t start, int32_t width)
{
    int found;
    size_t i = bucket_find(c, start, width, &found);
    return found ? (long)i : -1;
}

void mls_combo_drop(struct mls_combo *c, size_t index)
{
    free(c->buckets[index].classes);
    memmove(&c->buckets[index], &c->buckets[index + 1],
            (c->num_buckets - index - 1) * sizeof(*c->buckets));
    c->num_buckets--;
}

void mls_monitor_unmake(struct mls_monitor *m, const char *key, int64_t start, int32_t width)
{
    int found;
    size_t at = combo_find(m, key, &found);
    if (!found)
        return;
    struct mls_combo *c = &m->combos[at];
    long b = mls_combo_find(c, start, width);
    if (b >= 0 && c->buckets[b].total.observations == 0) {
        mls_combo_drop(c, (size_t)b);
        if (width == MLS_BUCKET)
            mls_combo_hour_refresh(m, c, start / MLS_HOUR * MLS_HOUR);
    }
    if (c->num_buckets || c->ingested.observations)
        return;
    combo_free(m, c);
    memmove(&m->combos[at], &m->combos[at + 1], (m->num_combos - at - 1) * sizeof(*m->combos));
    m->num_combos--;
}

/* ---- Hour sums ------------------------------------------------------------------------------ */

static size_t hour_find(const struct mls_combo *c, int64_t hour, int *found)
{
    size_t lo = 0, hi = c->num_hours;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->hours[mid].start < hour)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < c->num_hours && c->hours[lo].start == hour;
    return lo;
}

const struct mls_hour *mls_combo_hour(const struct mls_combo *c, int64_t hour)
{
    int found;
    size_t i = hour_find(c, hour, &found);
    return found ? &c->hours[i] : NULL;
}

void mls_combo_hour_refresh(struct mls_monitor *m, struct mls_combo *c, int64_t hour)
{
    int found;
    size_t at = hour_find(c, hour, &found);
    if (!found)
        return;
    struct mls_hour *h = &c->hours[at];
    int64_t nc = mls_class_slots(&m->cfg);
    memset(&h->total, 0, sizeof(h->total));
    if (h->classes)
        memset(h->classes, 0, (size_t)nc * sizeof(*h->classes));
    size_t first = bucket_find(c, hour, MLS_BUCKET, &found), last = first;
    while (last < c->num_buckets && c->buckets[last].start < hour + MLS_HOUR)
        last++;
    int any = 0;
    for (size_t i = last; i-- > first;) { /* newest first, as queries add */
        const struct mls_bucket *b = &c->buckets[i];
        if (b->width != MLS_BUCKET)
            continue;
        cell_add(&h->total, &b->total);
        if (h->classes && b->classes)
            classes_add(h->classes, b->classes, nc);
        any = 1;
    }
    if (!any) {
        free(h->classes);
        memmove(h, h + 1, (c->num_hours - at - 1) * sizeof(*h));
        c->num_hours--;
    }
}

int mls_combo_hour_make(struct mls_monitor *m, struct mls_combo *c, int64_t hour)
{
    int found;
    size_t at = hour_find(c, hour, &found);
    if (!found) {
        struct mls_class_sums *cl = NULL;
        int64_t slots = mls_class_slots(&m->cfg);
        if (slots && !(cl = calloc((size_t)slots, sizeof(struct mls_class_sums))))
            return -1;
        if (c->num_hours == c->cap_hours) {
            size_t cap = c->cap_hours ? c->cap_hours * 2 : 8;
            struct mls_hour *n = realloc(c->hours, cap * sizeof(*n));
            if (!n) {
                free(cl);
                return -1;
            }
            c->hours = n;
            c->cap_hours = cap;
        }
        memmove(&c->hours[at + 1], &c->hours[at], (c->num_hours - at) * sizeof(*c->hours));
        c->num_hours++;
        memset(&c->hours[at], 0, sizeof(c->hours[at]));
        c->hours[at].start = hour;
        c->hours[at].classes = cl;
    }
    mls_combo_hour_refresh(m, c, hour);
    return 0;
}

int mls_monitor_hours_rebuild(struct mls_monitor *m)
{
    for (size_t i = 0; i < m->num_combos; i++) {
        struct mls_combo *c = &m->combos[i];
        for (size_t b = 0; b < c->num_buckets; b++) {
            const struct mls_bucket *bk = &c->buckets[b];
            int64_t hour = bk->start / MLS_HOUR * MLS_HOUR;
            if (bk->width == MLS_BUCKET && !mls_combo_hour(c, hour) &&
                mls_combo_hour_make(m, c, hour))
                return -1;
        }
    }
    return 0;
}

char *mls_combo_key(char *const *values, int n)
{
    struct mlp_buf b = {0};
    mlp_buf_puts(&b, "[");
    for (int k = 0; k < n; k++) {
        if (k)
            mlp_buf_puts(&b, ",");
        if (values[k])
            mlp_buf_string(&b, values[k]);
        else
            mlp_buf_puts(&b, "null");
    }
    mlp_buf_puts(&b, "]");
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

int mls_combo_values(const char *key, int n, char **values)
{
    json_t *a = json_loads(key, 0, NULL);
    int rc = json_is_array(a) && json_array_size(a) == (size_t)n ? 0 : -1;
    for (int k = 0; k < n; k++)
        values[k] = NULL;
    for (int k = 0; !rc && k < n; k++) {
        const json_t *v = json_array_get(a, (size_t)k);
        if (json_is_string(v))
            rc = (values[k] = strdup(json_string_value(v))) ? 0 : -1;
        else if (!json_is_null(v))
            rc = -1;
    }
    if (rc)
        for (int k = 0; k < n; k++) {
            free(values[k]);
            values[k] = NULL;
        }
    json_decref(a);
    return rc;
}

/* ---- The registry ------------------------------------------------------------------------ */

int mls_registry_init(struct mls_registry *g, const struct mls_monitor_limits *lim)
{
    memset(g, 0, sizeof(*g));
    g->limits = *lim;
    return pthread_rwlock_init(&g->lock, NULL) ? -1 : 0;
}

void mls_registry_free(struct mls_registry *g)
{
    for (size_t i = 0; i < g->count; i++)
        mls_monitor_unref(g->items[i]);
    free(g->items);
    pthread_rwlock_destroy(&g->lock);
    memset(g, 0, sizeof(*g));
}

static size_t registry_find(const struct mls_registry *g, const char *name, int *found)
{
    size_t lo = 0, hi = g->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(g->items[mid]->name, name) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < g->count && !strcmp(g->items[lo]->name, name);
    return lo;
}

struct mls_monitor *mls_registry_get(struct mls_registry *g, const char *name)
{
    int found;
    pthread_rwlock_rdlock(&g->lock);
    size_t i = registry_find(g, name, &found);
    struct mls_monitor *m = found ? g->items[i] : NULL;
    if (m)
        mls_monitor_ref(m);
    pthread_rwlock_unlock(&g->lock);
    return m;
}

int mls_registry_put(struct mls_registry *g, struct mls_monitor *m)
{
    int found;
    pthread_rwlock_wrlock(&g->lock);
    size_t i = registry_find(g, m->name, &found);
    struct mls_monitor *old = NULL;
    if (found) {
        old = g->items[i];
        g->items[i] = m;
    } else {
        if (g->count == g->cap) {
            size_t cap = g->cap ? g->cap * 2 : 8;
            struct mls_monitor **n = realloc(g->items, cap * sizeof(*n));
            if (!n) {
                pthread_rwlock_unlock(&g->lock);
                return -1;
            }
            g->items = n;
            g->cap = cap;
        }
        memmove(&g->items[i + 1], &g->items[i], (g->count - i) * sizeof(*g->items));
        g->items[i] = m;
        g->count++;
    }
    pthread_rwlock_unlock(&g->lock);
    mls_monitor_unref(old);
    return 0;
}

void mls_registry_remove(struct mls_registry *g, const char *name)
{
    int found;
    pthread_rwlock_wrlock(&g->lock);
    size_t i = registry_find(g, name, &found);
    struct mls_monitor *old = NULL;
    if (found) {
        old = g->items[i];
        memmove(&g->items[i], &g->items[i + 1], (g->count - i - 1) * sizeof(*g->items));
        g->count--;
    }
    pthread_rwlock_unlock(&g->lock);
    mls_monitor_unref(old);
}

void mls_json_whole(struct mlp_buf *b, double v)
{
    if (v == (double)(long long)v && v > -9007199254740992.0 && v < 9007199254740992.0) {
        char t[32];
        snprintf(t, sizeof(t), "%lld", (long long)v);
        mlp_buf_puts(b, t);
    } else {
        mlp_buf_number(b, v);
    }
}

void mls_monitor_write_config(const struct mls_monitor *m, struct mlp_buf *b)
{
    mlp_buf_puts(b, "{\"name\":");
    mlp_buf_string(b, m->name);
    mlp_buf_puts(b, ",\"config\":");
    mlp_buf_puts(b, m->cfg.json);
    mlp_buf_puts(b, "}");
}

double mls_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
