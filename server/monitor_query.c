/*
 * monitor_query.c -- what a monitor answers: its figures (total, windows, slices, drift), its
 * series, and its Prometheus counters. Every figure is a sum of buckets read under the
 * monitor's read lock; nothing here changes the model.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor.h"

/* A sum of buckets: the totals and, with classes, the per-class parts. */
struct acc {
    struct mls_cell cell;
    struct mls_class_sums *cls; /* num_classes, or NULL */
};

static int acc_init(struct acc *a, int64_t nc)
{
    memset(a, 0, sizeof(*a));
    if (nc && !(a->cls = calloc((size_t)nc, sizeof(*a->cls))))
        return -1;
    return 0;
}

/* dst[i] += src[i]: the per-class parts are plain doubles, added as one flat array (the
 * loop the compiler vectorises: a query adds up a month of buckets of a thousand classes). */
static void add_flat(double *restrict dst, const double *restrict src, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] += src[i];
}

static void acc_add(struct acc *a, const struct mls_cell *cell, const struct mls_class_sums *cls,
                    int64_t nc)
{
    ml_sums_add(&a->cell.s, &cell->s);
    a->cell.observations += cell->observations;
    if (a->cls && cls)
        add_flat((double *)a->cls, (const double *)cls, (size_t)nc * MLS_CLASS_FIELDS);
}

static void acc_free(struct acc *a)
{
    free(a->cls);
    a->cls = NULL;
}

/* A class's parts as library sums (for ml_sums_loss). */
static struct ml_sums class_as_sums(const struct mls_class_sums *c, double samples)
{
    struct ml_sums s = {c->weighted_sum, c->denominator, c->sum_weights, c->num_nonzero_weights,
                        c->sum_sq,       samples,        samples};
    return s;
}

static void key(struct mlp_buf *b, const char *k)
{
    mlp_buf_string(b, k);
    mlp_buf_puts(b, ":");
}

static void member(struct mlp_buf *b, const char *k, double v)
{
    mlp_buf_puts(b, ",");
    key(b, k);
    mlp_buf_number(b, v);
}

static void member_whole(struct mlp_buf *b, const char *k, double v)
{
    mlp_buf_puts(b, ",");
    key(b, k);
    mls_json_whole(b, v);
}

static void write_class_id(struct mlp_buf *b, const struct mls_mconfig *cfg, int64_t c)
{
    if (cfg->class_names)
        mlp_buf_string(b, cfg->class_names[c]);
    else
        mls_json_whole(b, (double)c);
}

/*
 * A window against its baseline, for one class or for the whole (a monitor without classes):
 * the figures of the drift rule, which the drift list and the figures of the whole monitor's
 * windows both write, so that the two cannot disagree. `loss` is the weighted mean Σ w·l / Σ w
 * whatever the monitor's reduction (the mean a z-score compares), `z` is ±Infinity when
 * neither side varies and the means differ, and 0 when they are equal.
 */
struct comparison {
    int has_base; /* weight on the baseline's side: base_loss */
    int has_both; /* weight on both sides: loss, change and z */
    double loss, base_loss, z, weight, base_weight;
};

static struct comparison compare(double ws, double sw, double nz, double sq, double bws, double bsw,
                                 double bnz, double bsq)
{
    struct comparison k = {.weight = sw, .base_weight = bsw};
    k.has_base = bsw > 0 && bnz > 0;
    k.has_both = k.has_base && sw > 0 && nz > 0;
    if (k.has_base)
        k.base_loss = bws / bsw;
    if (!k.has_both)
        return k;
    double m = ws / sw, bm = k.base_loss;
    double var = fmax(sq / sw - m * m, 0), bvar = fmax(bsq / bsw - bm * bm, 0);
    double se = sqrt(var / nz + bvar / bnz);
    k.loss = m;
    k.z = se > 0 ? (m - bm) / se : m == bm ? 0 : (m > bm ? INFINITY : -INFINITY);
    return k;
}

/* Class `c` of a window against its baseline, or the whole when c < 0. */
static struct comparison compare_accs(const struct acc *cur, const struct acc *base, int64_t c)
{
    if (c < 0) {
        const struct ml_sums *x = &cur->cell.s, *y = &base->cell.s;
        return compare(x->weighted_sum, x->sum_weights, x->num_nonzero_weights, x->sum_sq,
                       y->weighted_sum, y->sum_weights, y->num_nonzero_weights, y->sum_sq);
    }
    const struct mls_class_sums *x = &cur->cls[c], *y = &base->cls[c];
    return compare(x->weighted_sum, x->sum_weights, x->num_nonzero_weights, x->sum_sq,
                   y->weighted_sum, y->sum_weights, y->num_nonzero_weights, y->sum_sq);
}

/* Listed in "drift": |z| >= drift.z with at least drift.min_weight on both sides. */
static int drifts(const struct mls_mconfig *cfg, const struct comparison *k)
{
    double minw = cfg->drift_min_weight;
    return k->has_both && k->weight >= minw && k->base_weight >= minw && fabs(k->z) >= cfg->drift_z;
}

static void member_or_null(struct mlp_buf *b, const char *k, int has, double v)
{
    if (has) {
        member(b, k, v);
        return;
    }
    mlp_buf_puts(b, ",");
    key(b, k);
    mlp_buf_puts(b, "null");
}

/* A figure's comparison, under the drift list's names but for its "loss": the figure's own is
 * its reduction's, and "change" is the weighted mean's (the drift entry's "loss"). */
static void write_comparison(struct mlp_buf *b, const struct comparison *k)
{
    member_or_null(b, "baseline_loss", k->has_base, k->base_loss);
    member(b, "baseline_weight", k->base_weight);
    member_or_null(b, "change", k->has_both, k->loss - k->base_loss);
    member_or_null(b, "z", k->has_both, k->z);
}

/* F: {"loss", the sums, "observations", ["from"], ["per_class"]}; with `base` (a window of
 * the whole monitor, which drift compares), the comparison where drift applies: per class, or
 * the whole's without classes. */
static void write_figure(struct mlp_buf *b, const struct mls_mconfig *cfg, const struct acc *a,
                         const struct acc *base, int64_t from)
{
    const struct ml_sums *s = &a->cell.s;
    mlp_buf_puts(b, "{\"loss\":");
    mlp_buf_number(b, ml_sums_loss(&cfg->ratio, s));
    member(b, "weighted_sum", s->weighted_sum);
    member(b, "denominator", s->denominator);
    member(b, "sum_weights", s->sum_weights);
    member_whole(b, "num_nonzero_weights", s->num_nonzero_weights);
    member_whole(b, "elements", s->elements);
    member_whole(b, "samples", s->samples);
    member_whole(b, "observations", a->cell.observations);
    if (from != INT64_MIN)
        member_whole(b, "from", (double)from);
    if (base && !cfg->num_classes) {
        struct comparison k = compare_accs(a, base, -1);
        write_comparison(b, &k);
    }
    if (a->cls) {
        mlp_buf_puts(b, ",\"per_class\":[");
        for (int64_t c = 0; c < cfg->num_classes; c++) {
            const struct mls_class_sums *k = &a->cls[c];
            struct ml_sums cs = class_as_sums(k, s->samples);
            mlp_buf_puts(b, c ? ",{\"class\":" : "{\"class\":");
            write_class_id(b, cfg, c);
            member(b, "loss", ml_sums_loss(&cfg->ratio, &cs));
            member(b, "weighted_sum", k->weighted_sum);
            member(b, "denominator", k->denominator);
            member(b, "sum_weights", k->sum_weights);
            member_whole(b, "num_nonzero_weights", k->num_nonzero_weights);
            member(b, "sum_sq", k->sum_sq);
            if (base) {
                struct comparison d = compare_accs(a, base, c);
                write_comparison(b, &d);
            }
            mlp_buf_puts(b, "}");
        }
        mlp_buf_puts(b, "]");
    }
    mlp_buf_puts(b, "}");
}

/* Totals, windows and baselines of one set of buckets. */
struct span {
    struct acc total;
    struct acc win[MLS_MAX_WINDOWS];
    struct acc base[MLS_MAX_WINDOWS];
    struct acc ref; /* a pinned baseline (drift.reference) */
};

static int span_init(struct span *s, int nw, int64_t nc, int with_base)
{
    memset(s, 0, sizeof(*s));
    int rc = acc_init(&s->total, nc);
    for (int w = 0; w < nw; w++) {
        rc |= acc_init(&s->win[w], nc);
        if (with_base)
            rc |= acc_init(&s->base[w], nc);
    }
    if (with_base)
        rc |= acc_init(&s->ref, nc);
    return rc;
}

static void span_free(struct span *s)
{
    acc_free(&s->total);
    acc_free(&s->ref);
    for (int w = 0; w < MLS_MAX_WINDOWS; w++) {
        acc_free(&s->win[w]);
        acc_free(&s->base[w]);
    }
}

static void span_merge(struct span *into, const struct span *s, int nw, int64_t nc)
{
    acc_add(&into->total, &s->total.cell, s->total.cls, nc);
    acc_add(&into->ref, &s->ref.cell, s->ref.cls, nc);
    for (int w = 0; w < nw; w++) {
        acc_add(&into->win[w], &s->win[w].cell, s->win[w].cls, nc);
        acc_add(&into->base[w], &s->base[w].cell, s->base[w].cls, nc);
    }
}

/* A figure: the buckets whose start is in [lo, hi), summed into `a`. */
struct range {
    int64_t lo, hi;
    struct acc *a;
};

/*
 * One combo's buckets into a fresh span (from[w]: the window's first bucket start), `tmp` an
 * accumulator to work in. Buckets are taken newest first, an hour at a time: the minute
 * buckets of the hour, then its hour bucket if it has one. A figure that holds all of an
 * hour's minute buckets adds the hour's sum, kept by the writer (struct mls_hour); one that
 * holds some adds theirs, summed the same way, newest first from zero. Every figure is then
 * the same bits for the same buckets, wherever the windows start (and after a restart), and
 * a query reads a month of minutes as a month of hours, but for the edges of its windows.
 */
static void span_scan(struct span *s, const struct mls_mconfig *cfg, const struct mls_combo *c,
                      const int64_t *from, struct acc *tmp)
{
    int64_t nc = mls_class_slots(cfg); /* (the late part is summed with the classes) */
    struct range r[2 + 2 * MLS_MAX_WINDOWS];
    int nr = 0;
    r[nr++] = (struct range){INT64_MIN, INT64_MAX, &s->total};
    for (int w = 0; w < cfg->num_windows; w++) {
        r[nr++] = (struct range){from[w], INT64_MAX, &s->win[w]};
        if (!cfg->reference)
            r[nr++] = (struct range){from[w] - cfg->windows[w], from[w], &s->base[w]};
    }
    if (cfg->reference)
        r[nr++] = (struct range){cfg->reference_from, cfg->reference_to, &s->ref};
    size_t i = c->num_buckets;
    while (i > 0) {
        const struct mls_bucket *newest = &c->buckets[i - 1];
        int64_t hour = newest->start / MLS_HOUR * MLS_HOUR;
        size_t j = i; /* [j, i): the buckets of this hour, minutes and the hour's own */
        while (j > 0 && c->buckets[j - 1].start >= hour)
            j--;
        int64_t lo = INT64_MAX, hi = INT64_MIN; /* the minutes' starts */
        for (size_t b = j; b < i; b++) {
            if (c->buckets[b].width != MLS_BUCKET)
                continue;
            lo = c->buckets[b].start < lo ? c->buckets[b].start : lo;
            hi = c->buckets[b].start > hi ? c->buckets[b].start : hi;
        }
        const struct mls_hour *h = lo <= hi ? mls_combo_hour(c, hour) : NULL;
        for (int k = 0; k < nr && lo <= hi; k++) {
            if (hi < r[k].lo || lo >= r[k].hi)
                continue;
            if (h && lo >= r[k].lo && hi < r[k].hi) {
                acc_add(r[k].a, &h->total, h->classes, nc);
                continue;
            }
            memset(&tmp->cell, 0, sizeof(tmp->cell));
            if (tmp->cls)
                memset(tmp->cls, 0, (size_t)nc * sizeof(*tmp->cls));
            for (size_t b = i; b-- > j;) {
                const struct mls_bucket *bk = &c->buckets[b];
                if (bk->width == MLS_BUCKET && bk->start >= r[k].lo && bk->start < r[k].hi)
                    acc_add(tmp, &bk->total, bk->classes, nc);
            }
            acc_add(r[k].a, &tmp->cell, tmp->cls, nc);
        }
        for (size_t b = i; b-- > j;) {
            const struct mls_bucket *bk = &c->buckets[b];
            if (bk->width == MLS_BUCKET)
                continue;
            for (int k = 0; k < nr; k++)
                if (bk->start >= r[k].lo && bk->start < r[k].hi)
                    acc_add(r[k].a, &bk->total, bk->classes, nc);
        }
        i = j;
    }
}

/* The buckets a window is compared with: the same length before it, or the pinned range. */
static const struct acc *baseline_of(const struct mls_mconfig *cfg, const struct span *s, int w)
{
    return cfg->reference ? &s->ref : &s->base[w];
}

struct drift {
    int window;
    int64_t cls; /* -1: the whole */
    struct comparison k;
};

static int drift_order(const void *pa, const void *pb)
{
    const struct drift *a = pa, *b = pb;
    double za = fabs(a->k.z), zb = fabs(b->k.z);
    if (za != zb)
        return za > zb ? -1 : 1;
    if (a->window != b->window)
        return a->window < b->window ? -1 : 1;
    return a->cls < b->cls ? -1 : a->cls > b->cls;
}

static void write_drift(struct mlp_buf *b, const struct mls_mconfig *cfg, const struct span *s,
                        const int64_t *from)
{
    int64_t nc = cfg->num_classes;
    size_t cap = (size_t)cfg->num_windows * (size_t)(nc ? nc : 1), n = 0;
    struct drift *list = malloc((cap ? cap : 1) * sizeof(*list));
    if (!list) {
        b->failed = 1;
        return;
    }
    for (int w = 0; w < cfg->num_windows; w++) {
        for (int64_t c = nc ? 0 : -1; c < nc; c++) {
            struct comparison k = compare_accs(&s->win[w], baseline_of(cfg, s, w), c);
            if (drifts(cfg, &k))
                list[n++] = (struct drift){.window = w, .cls = c, .k = k};
        }
    }
    qsort(list, n, sizeof(*list), drift_order);
    mlp_buf_puts(b, "[");
    for (size_t i = 0; i < n; i++) {
        const struct drift *d = &list[i];
        mlp_buf_puts(b, i ? ",{\"window\":" : "{\"window\":");
        mlp_buf_string(b, cfg->window_names[d->window]);
        mlp_buf_puts(b, ",\"class\":");
        if (d->cls < 0)
            mlp_buf_puts(b, "null");
        else
            write_class_id(b, cfg, d->cls);
        member(b, "loss", d->k.loss);
        member(b, "baseline_loss", d->k.base_loss);
        member(b, "change", d->k.loss - d->k.base_loss);
        member(b, "z", d->k.z);
        member(b, "weight", d->k.weight);
        member(b, "baseline_weight", d->k.base_weight);
        member_whole(b, "from", (double)from[d->window]);
        mlp_buf_puts(b, "}");
    }
    mlp_buf_puts(b, "]");
    free(list);
}

/* A slice marginal: key index and value, and the span of every combo that has it. */
struct marginal {
    int key;
    const char *value;
    struct span span;
};

/* with_base: the whole monitor's windows, whose figures carry their drift comparison (a slice's
 * have no baseline: drift is the whole's). */
static void write_windows(struct mlp_buf *b, const struct mls_mconfig *cfg, const struct span *s,
                          const int64_t *from, int with_base)
{
    mlp_buf_puts(b, "{");
    for (int w = 0; w < cfg->num_windows; w++) {
        if (w)
            mlp_buf_puts(b, ",");
        key(b, cfg->window_names[w]);
        write_figure(b, cfg, &s->win[w], with_base ? baseline_of(cfg, s, w) : NULL, from[w]);
    }
    mlp_buf_puts(b, "}");
}

/* Q: the delays of the first labels of a figure's predictions, from its late part. */
static void write_delay(struct mlp_buf *b, const double *late, int64_t nc)
{
    double count = late[nc], sum = late[nc + 1];
    const double *hist = late + nc + 2;
    mlp_buf_puts(b, "{\"count\":");
    mls_json_whole(b, count);
    member(b, "mean", count > 0 ? sum / count : 0);
    static const struct {
        const char *name;
        double q;
    } qs[] = {{"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}};
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        /* The bin where the running count reaches q of the whole (nearest rank). */
        double rank = ceil(qs[i].q * count), run = 0;
        int bin = 0;
        while (bin < MLS_DELAY_BINS - 1 && run + hist[bin] < rank)
            run += hist[bin++];
        member(b, qs[i].name, count > 0 ? mls_delay_bin_value(bin) : 0);
    }
    mlp_buf_puts(b, "}");
}

static double sum_of(const double *v, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += v[i];
    return s;
}

/* "labels": what the store holds now (predictions, labelled positions, per class), and per
 * window the labelled positions and label delays of the window's predictions. */
static void write_labels(struct mlp_buf *b, const struct mls_monitor *m, const struct span *s)
{
    const struct mls_mconfig *cfg = &m->cfg;
    int64_t nc = cfg->num_classes;
    mlp_buf_puts(b, ",\"labels\":{\"predictions\":");
    mls_json_whole(b, m->predictions_live);
    member_whole(b, "labelled_positions", m->positions_live);
    mlp_buf_puts(b, ",\"per_class\":[");
    for (int64_t c = 0; c < nc; c++) {
        double n = m->labelled_live ? m->labelled_live[c] : 0;
        mlp_buf_puts(b, c ? ",{\"class\":" : "{\"class\":");
        write_class_id(b, cfg, c);
        member_whole(b, "labelled", n);
        member(b, "fraction", m->predictions_live > 0 ? n / m->predictions_live : 0);
        mlp_buf_puts(b, "}");
    }
    const struct acc *parts[1 + MLS_MAX_WINDOWS];
    parts[0] = &s->total;
    for (int w = 0; w < cfg->num_windows; w++)
        parts[1 + w] = &s->win[w];
    /* "delay" then "coverage": {"total": X, "windows": {"5m": X, ...}} */
    for (int what = 0; what < 2; what++) {
        mlp_buf_puts(b, what ? "},\"coverage\":{\"total\":" : "],\"delay\":{\"total\":");
        for (int i = 0; i <= cfg->num_windows; i++) {
            if (i == 1)
                mlp_buf_puts(b, ",\"windows\":{");
            else if (i > 1)
                mlp_buf_puts(b, ",");
            if (i)
                key(b, cfg->window_names[i - 1]);
            const double *late = mls_late_part(parts[i]->cls, nc);
            if (!what) {
                write_delay(b, late, nc);
                continue;
            }
            mlp_buf_puts(b, "{\"predictions\":");
            mls_json_whole(b, parts[i]->cell.s.samples);
            member_whole(b, "labelled_positions", sum_of(late, nc));
            mlp_buf_puts(b, "}");
        }
        if (cfg->num_windows)
            mlp_buf_puts(b, "}");
    }
    mlp_buf_puts(b, "}}");
}

void mls_monitor_write_figures(struct mls_monitor *m, int64_t now, struct mlp_buf *b)
{
    const struct mls_mconfig *cfg = &m->cfg;
    int nw = cfg->num_windows;
    int64_t nc = mls_class_slots(cfg); /* what the accumulators hold */
    int64_t minute = now / MLS_BUCKET * MLS_BUCKET, from[MLS_MAX_WINDOWS];
    for (int w = 0; w < nw; w++)
        from[w] = minute - cfg->windows[w] + MLS_BUCKET;

    struct span all, one;
    struct marginal *marg = NULL;
    size_t nmarg = 0, cap = 0;
    struct acc tmp;
    int oom = span_init(&all, nw, nc, 1) | acc_init(&tmp, nc);
    /* Per-class figures of the slices while they stay a bounded size (a thousand slice values
     * of four thousand classes would be gigabytes): the bound is taken before any allocation. */
    pthread_rwlock_rdlock(&m->lock); /* (num_combos is the writer's to change) */
    uint64_t most =
        (uint64_t)m->num_combos * (uint64_t)(cfg->num_slice_keys ? cfg->num_slice_keys : 1);
    int64_t marg_nc = most * (uint64_t)(nw + 1) * (uint64_t)nc <= MLS_SLICE_CLASS_FIGURES ? nc : 0;
    for (size_t i = 0; i < m->num_combos && !oom; i++) {
        const struct mls_combo *c = &m->combos[i];
        if (span_init(&one, nw, nc, 1)) {
            span_free(&one);
            oom = 1;
            break;
        }
        span_scan(&one, cfg, c, from, &tmp);
        span_merge(&all, &one, nw, nc);
        for (int k = 0; k < cfg->num_slice_keys && !oom; k++) {
            if (!c->values[k])
                continue;
            size_t j = 0;
            while (j < nmarg && !(marg[j].key == k && !strcmp(marg[j].value, c->values[k])))
                j++;
            if (j == nmarg) {
                if (nmarg == cap) {
                    size_t ncap = cap ? cap * 2 : 8;
                    struct marginal *n = realloc(marg, ncap * sizeof(*n));
                    if (!n) {
                        oom = 1;
                        break;
                    }
                    marg = n;
                    cap = ncap;
                }
                marg[j].key = k;
                marg[j].value = c->values[k];
                nmarg++;
                if (span_init(&marg[j].span, nw, marg_nc, 0)) {
                    oom = 1;
                    break;
                }
            }
            span_merge(&marg[j].span, &one, nw, nc);
        }
        span_free(&one);
    }

    if (!oom) {
        mlp_buf_puts(b, "{\"name\":");
        mlp_buf_string(b, m->name);
        mlp_buf_puts(b, ",\"config\":");
        mlp_buf_puts(b, cfg->json);
        member_whole(b, "now", (double)now);
        mlp_buf_puts(b, ",\"total\":");
        write_figure(b, cfg, &all.total, NULL, INT64_MIN);
        mlp_buf_puts(b, ",\"windows\":");
        write_windows(b, cfg, &all, from, 1);
        mlp_buf_puts(b, ",\"slices\":{");
        for (size_t j = 0; j < nmarg; j++) {
            char name[MLS_SLICE_VALUE_MAX + 80];
            snprintf(name, sizeof(name), "%s=%s", cfg->slice_keys[marg[j].key], marg[j].value);
            if (j)
                mlp_buf_puts(b, ",");
            key(b, name);
            mlp_buf_puts(b, "{\"total\":");
            write_figure(b, cfg, &marg[j].span.total, NULL, INT64_MIN);
            mlp_buf_puts(b, ",\"windows\":");
            write_windows(b, cfg, &marg[j].span, from, 0);
            mlp_buf_puts(b, "}");
        }
        mlp_buf_puts(b, "}");
        if (nc && !marg_nc && nmarg)
            mlp_buf_puts(b, ",\"slices_per_class\":false");
        mlp_buf_puts(b, ",\"drift\":");
        write_drift(b, cfg, &all, from);
        if (cfg->late)
            write_labels(b, m, &all);
        mlp_buf_puts(b, "}");
    }
    pthread_rwlock_unlock(&m->lock);
    for (size_t j = 0; j < nmarg; j++)
        span_free(&marg[j].span);
    free(marg);
    span_free(&all);
    acc_free(&tmp);
    if (oom)
        b->failed = 1;
}

void mls_monitor_write_series(struct mls_monitor *m, const struct mls_series_query *q,
                              struct mlp_buf *b)
{
    const struct mls_mconfig *cfg = &m->cfg;
    int64_t first = q->from / q->step, last = (q->to - 1) / q->step;
    size_t n = q->to > q->from ? (size_t)(last - first + 1) : 0;
    struct mls_cell *cells = calloc(n ? n : 1, sizeof(*cells));
    struct mls_class_sums *cls = calloc(n ? n : 1, sizeof(*cls));
    if (!cells || !cls) {
        free(cells);
        free(cls);
        b->failed = 1;
        return;
    }
    pthread_rwlock_rdlock(&m->lock);
    for (size_t i = 0; i < m->num_combos; i++) {
        const struct mls_combo *c = &m->combos[i];
        int match = 1;
        for (int f = 0; f < q->num_filters && match; f++) {
            const char *v = c->values[q->filter_key[f]];
            match = v && !strcmp(v, q->filter_value[f]);
        }
        if (!match)
            continue;
        for (size_t j = 0; j < c->num_buckets; j++) {
            const struct mls_bucket *bk = &c->buckets[j];
            if (bk->start < q->from || bk->start >= q->to)
                continue;
            size_t p = (size_t)(bk->start / q->step - first);
            ml_sums_add(&cells[p].s, &bk->total.s);
            cells[p].observations += bk->total.observations;
            if (q->cls >= 0) {
                const struct mls_class_sums *k = &bk->classes[q->cls];
                cls[p].weighted_sum += k->weighted_sum;
                cls[p].denominator += k->denominator;
                cls[p].sum_weights += k->sum_weights;
                cls[p].num_nonzero_weights += k->num_nonzero_weights;
                cls[p].sum_sq += k->sum_sq;
            }
        }
    }
    pthread_rwlock_unlock(&m->lock);

    mlp_buf_puts(b, "{\"name\":");
    mlp_buf_string(b, m->name);
    member_whole(b, "step", (double)q->step);
    member_whole(b, "from", (double)q->from);
    member_whole(b, "to", (double)q->to);
    if (q->cls >= 0) {
        mlp_buf_puts(b, ",\"class\":");
        write_class_id(b, cfg, q->cls);
    }
    mlp_buf_puts(b, ",\"points\":[");
    int any = 0;
    for (size_t p = 0; p < n; p++) {
        if (cells[p].observations == 0)
            continue;
        struct ml_sums s = q->cls >= 0 ? class_as_sums(&cls[p], cells[p].s.samples) : cells[p].s;
        mlp_buf_puts(b, any++ ? ",{\"t\":" : "{\"t\":");
        mls_json_whole(b, (double)((first + (int64_t)p) * q->step));
        member(b, "loss", ml_sums_loss(&cfg->ratio, &s));
        member(b, "weighted_sum", s.weighted_sum);
        member(b, "denominator", s.denominator);
        member(b, "sum_weights", s.sum_weights);
        member_whole(b, "num_nonzero_weights", s.num_nonzero_weights);
        member_whole(b, "elements", cells[p].s.elements);
        member_whole(b, "observations", cells[p].observations);
        mlp_buf_puts(b, "}");
    }
    mlp_buf_puts(b, "]}");
    free(cells);
    free(cls);
}

/* ---- Prometheus ---------------------------------------------------------------------------- */

static void label_value(struct mlp_buf *b, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\')
            mlp_buf_puts(b, "\\\\");
        else if (*p == '"')
            mlp_buf_puts(b, "\\\"");
        else if (*p == '\n')
            mlp_buf_puts(b, "\\n");
        else
            mlp_buf_append(b, p, 1);
    }
}

static void prom_number(struct mlp_buf *b, double v)
{
    if (isnan(v))
        mlp_buf_puts(b, "NaN");
    else if (isinf(v))
        mlp_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    else
        mlp_buf_number(b, v);
}

/* The labels of a combo: monitor and every slice key ("" when absent). */
static void combo_labels(struct mlp_buf *b, const struct mls_monitor *m, const struct mls_combo *c)
{
    mlp_buf_puts(b, "{monitor=\"");
    label_value(b, m->name);
    mlp_buf_puts(b, "\"");
    for (int k = 0; k < m->cfg.num_slice_keys; k++) {
        mlp_buf_puts(b, ",");
        mlp_buf_puts(b, m->cfg.slice_keys[k]);
        mlp_buf_puts(b, "=\"");
        label_value(b, c->values[k] ? c->values[k] : "");
        mlp_buf_puts(b, "\"");
    }
}

enum { F_WS, F_DEN, F_SW, F_NZ, F_EL, F_OBS, F_COUNT };
static const struct {
    const char *name, *help;
    int per_class;
} families[] = {
    {"maskloss_monitor_weighted_loss_sum", "Sum of loss * weight this process ingested", 1},
    {"maskloss_monitor_denominator_sum", "Sum of the reduction's denominators ingested", 1},
    {"maskloss_monitor_weights_sum", "Sum of the weights ingested", 1},
    {"maskloss_monitor_nonzero_weights_total", "Count of non-zero weights ingested", 1},
    {"maskloss_monitor_elements_total", "Loss elements ingested", 0},
    {"maskloss_monitor_observations_total", "Observations ingested (duplicates once)", 0},
};

static double cell_field(const struct mls_cell *c, int f)
{
    switch (f) {
    case F_WS:
        return c->s.weighted_sum;
    case F_DEN:
        return c->s.denominator;
    case F_SW:
        return c->s.sum_weights;
    case F_NZ:
        return c->s.num_nonzero_weights;
    case F_EL:
        return c->s.elements;
    default:
        return c->observations;
    }
}

static double class_field(const struct mls_class_sums *c, int f)
{
    return f == F_WS    ? c->weighted_sum
           : f == F_DEN ? c->denominator
           : f == F_SW  ? c->sum_weights
                        : c->num_nonzero_weights;
}

void mls_registry_write_metrics(struct mls_registry *g, struct mlp_buf *b)
{
    pthread_rwlock_rdlock(&g->lock);
    for (int pass = 0; pass < 2; pass++) {
        for (int f = 0; f < F_COUNT; f++) {
            if (pass && !families[f].per_class)
                continue;
            char head[300];
            const char *prefix = pass ? "maskloss_monitor_class_" : "";
            const char *base = families[f].name + (pass ? strlen("maskloss_monitor_") : 0);
            snprintf(head, sizeof(head), "# HELP %s%s %s%s\n# TYPE %s%s counter\n", prefix, base,
                     families[f].help, pass ? ", per class" : "", prefix, base);
            int wrote_head = 0;
            for (size_t i = 0; i < g->count; i++) {
                struct mls_monitor *m = g->items[i];
                if (pass && !m->cfg.export_classes)
                    continue;
                pthread_rwlock_rdlock(&m->lock);
                if (pass &&
                    (uint64_t)m->num_combos * (uint64_t)m->cfg.num_classes > MLS_CLASS_SERIES_MAX) {
                    /* Cardinality: a scrape of millions of series helps nobody. */
                    if (f == 0) {
                        char note[300];
                        snprintf(note, sizeof(note),
                                 "# monitor %s: %zu slice combinations x %lld classes is more "
                                 "than %u per-class series; left out\n",
                                 m->name, m->num_combos, (long long)m->cfg.num_classes,
                                 MLS_CLASS_SERIES_MAX);
                        mlp_buf_puts(b, note);
                    }
                    pthread_rwlock_unlock(&m->lock);
                    continue;
                }
                for (size_t j = 0; j < m->num_combos; j++) {
                    const struct mls_combo *c = &m->combos[j];
                    if (!wrote_head++)
                        mlp_buf_puts(b, head);
                    if (!pass) {
                        mlp_buf_puts(b, families[f].name);
                        combo_labels(b, m, c);
                        mlp_buf_puts(b, "} ");
                        prom_number(b, cell_field(&c->ingested, f));
                        mlp_buf_puts(b, "\n");
                        continue;
                    }
                    for (int64_t k = 0; k < m->cfg.num_classes; k++) {
                        mlp_buf_puts(b, prefix);
                        mlp_buf_puts(b, base);
                        combo_labels(b, m, c);
                        mlp_buf_puts(b, ",class=\"");
                        if (m->cfg.class_names) {
                            label_value(b, m->cfg.class_names[k]);
                        } else {
                            char idx[24];
                            snprintf(idx, sizeof(idx), "%lld", (long long)k);
                            mlp_buf_puts(b, idx);
                        }
                        mlp_buf_puts(b, "\"} ");
                        prom_number(b, class_field(&c->ingested_classes[k], f));
                        mlp_buf_puts(b, "\n");
                    }
                }
                pthread_rwlock_unlock(&m->lock);
            }
        }
    }
    /* Late labels: what the store holds now (gauges: they fall as predictions expire).
     * Replicas sharing a store each export its count: aggregate them with max, not sum. */
    static const char *const gauges[2][2] = {
        {"maskloss_monitor_predictions",
         "Predictions stored that take labels (the shared store's, on every replica: max)"},
        {"maskloss_monitor_labelled_positions",
         "Labelled positions of the stored predictions (the shared store's, on every replica: "
         "max)"}};
    for (int f = 0; f < 2; f++) {
        int wrote_head = 0;
        for (size_t i = 0; i < g->count; i++) {
            struct mls_monitor *m = g->items[i];
            if (!m->cfg.late)
                continue;
            if (!wrote_head++) {
                char head[300];
                snprintf(head, sizeof(head), "# HELP %s %s\n# TYPE %s gauge\n", gauges[f][0],
                         gauges[f][1], gauges[f][0]);
                mlp_buf_puts(b, head);
            }
            pthread_rwlock_rdlock(&m->lock);
            mlp_buf_puts(b, gauges[f][0]);
            mlp_buf_puts(b, "{monitor=\"");
            label_value(b, m->name);
            mlp_buf_puts(b, "\"} ");
            prom_number(b, f ? m->positions_live : m->predictions_live);
            mlp_buf_puts(b, "\n");
            pthread_rwlock_unlock(&m->lock);
        }
    }
    pthread_rwlock_unlock(&g->lock);
}
