/*
 * writer_late.c -- predictions and labels on the writer thread (late.h, writer_int.h).
 *
 * A labels op reads, for each prediction it names, the stored outputs and the labels it had;
 * the difference its new labels make is computed, then the labels are stored and the
 * difference added to the bucket and slice of the prediction, all in the transaction of the
 * ops around it. For an elementwise loss the positions an op changes are evaluated together,
 * two evaluations per op (before and after) instead of two per prediction: a position's loss
 * depends on its own output, label, weight and class alone.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "writer_int.h"

static void scale_cell(struct mls_cell *c, double k)
{
    double *v = (double *)c;
    for (int i = 0; i < MLS_CELL_FIELDS; i++)
        v[i] *= k;
}

/* A predictions op: its rows stored (those whose id is new), and as many unlabelled rows
 * counted in its bucket. */
void mls_wlate_predict(struct mls_writer *w, struct slots *sl, struct mls_op *op, int *failed)
{
    struct mls_store *s = w->store;
    struct mls_monitor *m = op->monitor;
    int64_t slots = mls_class_slots(&m->cfg);
    if ((s->vt->late_begin && s->vt->late_begin(s)) || s->vt->savepoint(s)) {
        *failed = 1;
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < op->num_rows; i++) {
        if (op->refused[i])
            continue;
        int64_t pred;
        int r = s->vt->put_prediction(s, m->name, op->ids[i], op->time, op->combo_key,
                                      (const char *)op->outputs + i * op->row_bytes, op->row_bytes,
                                      &pred);
        if (r == 0) {
            /* An expired prediction of that id the upkeep has not deleted yet goes now. */
            int d = s->vt->drop_prediction(s, m->name, op->ids[i], m->cfg.prediction_ttl, mls_now(),
                                           op->labelled_change, m->cfg.num_classes,
                                           &op->positions_change);
            if (d > 0) {
                op->predictions_change--;
                r = s->vt->put_prediction(s, m->name, op->ids[i], op->time, op->combo_key,
                                          (const char *)op->outputs + i * op->row_bytes,
                                          op->row_bytes, &pred);
            } else if (d < 0) {
                r = -1;
            }
        }
        if (r < 0) {
            *failed = 1;
            return;
        }
        if (r == 0)
            op->refused[i] = 1;
        else
            k++;
    }
    op->stored = k;
    op->predictions_change += (double)k;
    if (!k) {
        *failed = s->vt->release(s) != 0;
        op->result = MLS_OPR_OK;
        return;
    }
    struct slot *x = mls_wslot_of(w, sl, op);
    if (!x) {
        s->vt->undo(s);
        return;
    }
    /* The unlabelled row's sums times the rows stored: whole counts, exact. */
    scale_cell(&op->total, (double)k);
    op->total.observations = 1;
    for (int64_t i = 0; op->classes && i < slots * MLS_CLASS_FIELDS; i++)
        ((double *)op->classes)[i] *= (double)k;
    if (mls_wslot_overflows(x, &op->total, op->classes)) {
        s->vt->undo(s);
        op->result = MLS_OPR_OVERFLOW;
        snprintf(op->message, sizeof(op->message),
                 "with these predictions the sums of their bucket (monitor %s, %lld) would no "
                 "longer be finite: nothing was stored",
                 op->name, (long long)op->start);
        return;
    }
    if (s->vt->release(s)) {
        *failed = 1;
        return;
    }
    mls_wslot_add(x, op);
    op->result = MLS_OPR_OK;
}

/* A labels op's change to one slot of the transaction (by index: slots move when added). */
struct change {
    size_t slot;
    struct mls_cell total;
    struct mls_class_sums *classes; /* class slots */
};

/* An elementwise position an op changes: its prediction, class, output, its label before the
 * op (had: 0 when none) and after, and the change it goes to. */
struct position {
    int64_t pred;
    int32_t cls;
    int had;
    struct mls_label before, after;
    size_t change;
    const struct mls_label_in *in; /* the last label given for it */
};

/* A prediction an op names: its labels, order[first, end) (the op's labels sorted by id), and
 * once found stored and live, its key, time, change and positions pos[pos_first, pos_end). */
struct group {
    size_t first, end;
    int known;
    int64_t pred;
    double pt;
    size_t change;
    size_t pos_first, pos_end;
};

struct work {
    int64_t nc, slots;
    size_t esize;
    void *outputs;  /* one stored row */
    int32_t *where; /* per class: the group's position, or -1 */
    double *eval;   /* per-sample rows: 3 * nc */
    struct ml_sums *cls_old, *cls_now;
    const struct mls_label_in **order;
    struct group *groups;
    size_t num_groups;
    struct position *pos;
    size_t num_pos;
    void *inputs; /* the positions' outputs, in the monitor's dtype */
    struct change *changes;
    size_t num_changes, cap_changes;
};

static void work_free(struct work *lw)
{
    free(lw->outputs);
    free(lw->where);
    free(lw->eval);
    free(lw->cls_old);
    free(lw->cls_now);
    free(lw->order);
    free(lw->groups);
    free(lw->pos);
    free(lw->inputs);
    for (size_t i = 0; i < lw->num_changes; i++)
        free(lw->changes[i].classes);
    free(lw->changes);
}

static int work_init(struct work *lw, const struct mls_monitor *m, size_t labels)
{
    memset(lw, 0, sizeof(*lw));
    size_t n = (size_t)(lw->nc = m->cfg.num_classes), k = labels ? labels : 1;
    lw->slots = mls_class_slots(&m->cfg);
    lw->esize = m->cfg.f64 ? sizeof(double) : sizeof(float);
    lw->outputs = malloc(n * lw->esize);
    lw->where = malloc(n * sizeof(*lw->where));
    lw->eval = malloc(3 * n * sizeof(double));
    lw->cls_old = malloc(n * sizeof(*lw->cls_old));
    lw->cls_now = malloc(n * sizeof(*lw->cls_now));
    lw->order = malloc(k * sizeof(*lw->order));
    lw->groups = malloc(k * sizeof(*lw->groups));
    lw->pos = malloc(k * sizeof(*lw->pos));
    lw->inputs = malloc(k * lw->esize);
    if (!lw->outputs || !lw->where || !lw->eval || !lw->cls_old || !lw->cls_now || !lw->order ||
        !lw->groups || !lw->pos || !lw->inputs)
        return -1;
    for (size_t i = 0; i < n; i++)
        lw->where[i] = -1;
    return 0;
}

/* The change of slot `slot` of this op, made when absent; NULL when out of memory. */
static struct change *change_of(struct work *lw, size_t slot)
{
    for (size_t i = lw->num_changes; i-- > 0;)
        if (lw->changes[i].slot == slot)
            return &lw->changes[i];
    if (lw->num_changes == lw->cap_changes) {
        size_t cap = lw->cap_changes ? lw->cap_changes * 2 : 8;
        struct change *n = realloc(lw->changes, cap * sizeof(*n));
        if (!n)
            return NULL;
        lw->changes = n;
        lw->cap_changes = cap;
    }
    struct change *c = &lw->changes[lw->num_changes];
    memset(c, 0, sizeof(*c));
    if (!(c->classes = calloc((size_t)lw->slots, sizeof(*c->classes))))
        return NULL;
    c->slot = slot;
    lw->num_changes++;
    return c;
}

/* By id, then in the order the request gave them (row, then column of a dense request). */
static int label_order(const void *pa, const void *pb)
{
    const struct mls_label_in *a = pa, *b = pb;
    int c = strcmp(a->id, b->id);
    if (c)
        return c;
    if (a->row != b->row)
        return a->row < b->row ? -1 : 1;
    return (a->col > b->col) - (a->col < b->col);
}

void mls_op_sort_labels(struct mls_op *op)
{
    for (size_t i = 1; i < op->num_labels; i++) {
        if (label_order(&op->labels[i - 1], &op->labels[i]) > 0) {
            qsort(op->labels, op->num_labels, sizeof(*op->labels), label_order);
            return;
        }
    }
}

static void note_unknown(struct mls_op *op, const char *id, size_t count)
{
    op->unknown += count;
    if (op->num_unknown_ids >= MLS_UNKNOWN_IDS)
        return;
    if (!op->unknown_ids && !(op->unknown_ids = calloc(MLS_UNKNOWN_IDS, sizeof(char *))))
        return;
    char *copy = strdup(id);
    if (copy)
        op->unknown_ids[op->num_unknown_ids++] = copy;
}

/* d = a - b, the five parts of a class's sums. */
static void class_diff(struct mls_class_sums *d, const struct ml_sums *a, const struct ml_sums *b)
{
    d->weighted_sum += a->weighted_sum - b->weighted_sum;
    d->denominator += a->denominator - b->denominator;
    d->sum_weights += a->sum_weights - b->sum_weights;
    d->num_nonzero_weights += a->num_nonzero_weights - b->num_nonzero_weights;
    d->sum_sq += a->sum_sq - b->sum_sq;
}

/* A labelled position's late part: one more labelled position of class c, and, for a first
 * label, its delay. */
static void count_label(struct mls_op *op, struct change *ch, int64_t nc, int32_t c, int first,
                        double delay)
{
    double *late = mls_late_part(ch->classes, nc);
    late[c] += 1;
    op->labelled_change[c] += 1;
    if (!first)
        return;
    op->positions_change += 1;
    /* (a label dated before its prediction, clocks apart, waited 0 s) */
    delay = delay > 0 ? delay : 0;
    late[nc] += 1;
    late[nc + 1] += delay;
    late[nc + 2 + mls_delay_bin(delay)] += 1;
}

static void uncount_label(struct mls_op *op, struct change *ch, int64_t nc, int32_t c)
{
    mls_late_part(ch->classes, nc)[c] -= 1;
    op->labelled_change[c] -= 1;
}

/* Where the request gave a label ("labels[3]", "labels[1][2]"), written into buf. */
static const char *label_field(const struct mls_label_in *in, char *buf, size_t size)
{
    if (in->col >= 0)
        snprintf(buf, size, "labels[%lld][%d]", (long long)in->row, in->col);
    else
        snprintf(buf, size, "labels[%lld]", (long long)in->row);
    return buf;
}

/* Whether a label's part of the sums is finite and within MLS_CONTRIBUTION_MAX (a label given
 * again is replaced by subtracting it: exact within); else the op is refused, naming it. */
static int contribution_ok(struct mls_op *op, const struct mls_label_in *in,
                           const struct ml_sums *part)
{
    if (fabs(part->weighted_sum) <= MLS_CONTRIBUTION_MAX && isfinite(part->sum_sq))
        return 1;
    op->result = MLS_OPR_INVALID;
    snprintf(op->message, sizeof(op->message),
             "%s (id %.100s, class %d): weight x loss is %g with its stored output; a monitor "
             "keeps |weight x loss| of a label within %g (a label given again is replaced by "
             "subtracting it), so nothing was counted",
             label_field(in, op->field, sizeof(op->field)), in->id, in->l.cls, part->weighted_sum,
             MLS_CONTRIBUTION_MAX);
    return 0;
}

static void refuse(struct mls_op *op, enum mls_op_result r, const char *id, const char *why)
{
    op->result = r;
    snprintf(op->message, sizeof(op->message), "prediction %.130s: %s", id, why);
}

/* A per-sample loss: the group's labels (one class per prediction, the last one wins) and
 * the row's sums before and after. 0, or -1 with the op decided or *failed set. */
static int per_sample_group(struct mls_writer *w, struct work *lw, struct mls_op *op,
                            struct change *ch, const struct mls_label_in *const *group, size_t n,
                            int64_t pred, double pt, int *failed)
{
    struct mls_store *s = w->store;
    struct mls_monitor *m = op->monitor;
    const int64_t nc = lw->nc;
    struct mls_label before, after;
    int had = s->vt->get_label(s, pred, 0, &before);
    if (had < 0) {
        *failed = 1;
        return -1;
    }
    after = before;
    int has = had;
    for (size_t e = 0; e < n; e++) {
        const struct mls_label *l = &group[e]->l;
        if (has) {
            op->replaced++;
            if (after.cls != l->cls) {
                uncount_label(op, ch, nc, after.cls);
                count_label(op, ch, nc, l->cls, 0, 0);
            }
            double first = after.first;
            after = *l;
            after.first = first;
        } else {
            op->applied++;
            after = *l;
            after.first = op->time;
            count_label(op, ch, nc, l->cls, 1, op->time - pt);
            has = 1;
        }
    }
    struct ml_sums t_old, t_now;
    struct ml_error err;
    int rc = mls_late_row(&m->late, lw->outputs, &before, (size_t)had, &t_old, lw->cls_old,
                          lw->eval, &err);
    if (!rc)
        rc = mls_late_row(&m->late, lw->outputs, &after, 1, &t_now, lw->cls_now, lw->eval, &err);
    if (rc) {
        refuse(op, MLS_OPR_INVALID, group[0]->id, err.message);
        return -1;
    }
    if (!contribution_ok(op, group[n - 1], &t_now))
        return -1;
    double *d = (double *)&ch->total.s;
    const double *a = (const double *)&t_now, *b = (const double *)&t_old;
    for (size_t f = 0; f < sizeof(struct ml_sums) / sizeof(double); f++)
        d[f] += a[f] - b[f];
    for (int64_t c = 0; c < nc; c++)
        class_diff(&ch->classes[c], &lw->cls_now[c], &lw->cls_old[c]);
    if (s->vt->put_label(s, pred, 0, &after, op->time)) {
        *failed = 1;
        return -1;
    }
    return 0;
}

/* An elementwise loss: the group's positions (a class given twice: the later label wins),
 * each with its label before the op; their outputs are read later (read_positions). 0, or -1
 * with *failed set. */
static int elementwise_group(struct mls_writer *w, struct work *lw, struct mls_op *op,
                             struct group *gr, int *failed)
{
    struct mls_store *s = w->store;
    const int64_t nc = lw->nc;
    struct change *ch = &lw->changes[gr->change];
    gr->pos_first = lw->num_pos;
    for (size_t e = gr->first; e < gr->end; e++) {
        const struct mls_label_in *in = lw->order[e];
        int32_t j = lw->where[in->slot];
        if (j >= 0) { /* given earlier in this op */
            struct position *p = &lw->pos[j];
            p->in = in;
            op->replaced++;
            double f = p->after.first;
            p->after = in->l;
            p->after.first = f;
            continue;
        }
        struct position *p = &lw->pos[lw->num_pos];
        p->pred = gr->pred;
        p->cls = in->l.cls;
        p->change = gr->change;
        p->in = in;
        p->had = s->vt->get_label(s, gr->pred, in->slot, &p->before);
        if (p->had < 0) {
            *failed = 1;
            break;
        }
        p->after = in->l;
        if (p->had) {
            op->replaced++;
            p->after.first = p->before.first;
        } else {
            op->applied++;
            p->after.first = op->time;
            count_label(op, ch, nc, p->cls, 1, op->time - gr->pt);
        }
        lw->where[in->slot] = (int32_t)lw->num_pos++;
    }
    gr->pos_end = lw->num_pos;
    for (size_t i = gr->pos_first; i < gr->pos_end; i++)
        lw->where[lw->pos[i].cls] = -1;
    return *failed ? -1 : 0;
}

/* The outputs of a group's positions into lw->inputs: the stored row's span from the first
 * class to the last of them alone (one label a prediction reads one output, not the row). */
static int read_positions(struct mls_store *s, struct work *lw, const struct group *gr)
{
    if (gr->pos_first == gr->pos_end)
        return 0;
    int32_t lo = lw->pos[gr->pos_first].cls, hi = lo;
    for (size_t i = gr->pos_first + 1; i < gr->pos_end; i++) {
        lo = lw->pos[i].cls < lo ? lw->pos[i].cls : lo;
        hi = lw->pos[i].cls > hi ? lw->pos[i].cls : hi;
    }
    const size_t es = lw->esize;
    if (s->vt->read_outputs(s, gr->pred, (char *)lw->outputs + (size_t)lo * es, (size_t)lo * es,
                            (size_t)(hi - lo + 1) * es, (size_t)lw->nc * es))
        return -1;
    for (size_t i = gr->pos_first; i < gr->pos_end; i++)
        memcpy((char *)lw->inputs + i * es, (const char *)lw->outputs + (size_t)lw->pos[i].cls * es,
               es);
    return 0;
}

/* The elementwise positions' sums before and after, their differences into their changes. */
static int elementwise_eval(struct mls_op *op, struct work *lw)
{
    size_t k = lw->num_pos;
    if (!k)
        return 0;
    int32_t *cls = malloc(k * sizeof(*cls));
    double *lab = malloc(2 * k * sizeof(double)), *wt = malloc(2 * k * sizeof(double));
    struct ml_sums *pos = malloc(2 * k * sizeof(*pos));
    int rc = ML_ENOMEM;
    struct ml_error err;
    memset(&err, 0, sizeof(err));
    snprintf(err.message, sizeof(err.message), "out of memory");
    if (cls && lab && wt && pos) {
        for (size_t i = 0; i < k; i++) {
            const struct position *p = &lw->pos[i];
            cls[i] = p->cls;
            lab[i] = p->had ? p->before.value : 0;
            wt[i] = p->had ? p->before.weight : 0;
            lab[k + i] = p->after.value;
            wt[k + i] = p->after.weight;
        }
        const struct mls_late_ctx *ctx = &op->monitor->late;
        rc = mls_late_positions(ctx, (int64_t)k, lw->inputs, cls, lab, wt, pos, &err);
        if (!rc)
            rc = mls_late_positions(ctx, (int64_t)k, lw->inputs, cls, lab + k, wt + k, pos + k,
                                    &err);
    }
    /* A labelled position's part is finite and bounded (the replacement stays exact). */
    for (size_t i = 0; !rc && i < 2 * k; i++) {
        if (!contribution_ok(op, lw->pos[i % k].in, &pos[i]))
            rc = -2;
    }
    if (!rc) {
        for (size_t i = 0; i < k; i++) {
            struct change *ch = &lw->changes[lw->pos[i].change];
            const struct ml_sums *a = &pos[k + i], *b = &pos[i];
            ch->total.s.weighted_sum += a->weighted_sum - b->weighted_sum;
            ch->total.s.denominator += a->denominator - b->denominator;
            ch->total.s.sum_weights += a->sum_weights - b->sum_weights;
            ch->total.s.num_nonzero_weights += a->num_nonzero_weights - b->num_nonzero_weights;
            ch->total.s.sum_sq += a->sum_sq - b->sum_sq;
            class_diff(&ch->classes[lw->pos[i].cls], a, b);
        }
    } else if (rc == -2) {
        /* (decided above) */
    } else if (rc == ML_ENOMEM) {
        op->result = MLS_OPR_NOMEM;
        snprintf(op->message, sizeof(op->message), "out of memory applying labels");
    } else {
        op->result = MLS_OPR_INVALID;
        snprintf(op->message, sizeof(op->message), "the labels cannot be evaluated: %s",
                 err.message);
    }
    free(cls);
    free(lab);
    free(wt);
    free(pos);
    return rc ? -1 : 0;
}

/*
 * A labels op: per prediction named, the difference its labels make, added to the bucket and
 * slice of the prediction; the labels stored. Ids not stored or expired are counted unknown.
 */
void mls_wlate_label(struct mls_writer *w, struct slots *sl, struct mls_op *op, int *failed)
{
    struct mls_store *s = w->store;
    struct mls_monitor *m = op->monitor;
    const struct mls_mconfig *cfg = &m->cfg;
    const double now = mls_now();
    const int64_t now_s = (int64_t)floor(now); /* (buckets are whole seconds) */
    struct work lw;
    if (work_init(&lw, m, op->num_labels) ||
        !(op->labelled_change = calloc((size_t)cfg->num_classes, sizeof(double)))) {
        work_free(&lw);
        op->result = MLS_OPR_NOMEM;
        snprintf(op->message, sizeof(op->message), "out of memory applying labels");
        return;
    }
    const int elementwise = cfg->late == MLS_LATE_ELEMENTWISE;
    const size_t row_bytes = (size_t)lw.nc * lw.esize;
    if ((s->vt->late_begin && s->vt->late_begin(s)) || s->vt->savepoint(s)) {
        *failed = 1;
        work_free(&lw);
        return;
    }
    if (op->id[0]) {
        int fresh = s->vt->claim_id(s, op->name, op->id, op->t);
        if (fresh <= 0) {
            if (fresh < 0 || s->vt->release(s))
                *failed = 1;
            op->result = MLS_OPR_DUPLICATE;
            work_free(&lw);
            return;
        }
    }
    /* One group a prediction: the labels sorted by id (on the worker already: then this
     * only checks), the last label given for a class last. */
    mls_op_sort_labels(op);
    for (size_t i = 0; i < op->num_labels; i++)
        lw.order[i] = &op->labels[i];
    for (size_t g = 0; g < op->num_labels;) {
        size_t end = g + 1;
        while (end < op->num_labels && !strcmp(op->labels[end].id, op->labels[g].id))
            end++;
        lw.groups[lw.num_groups++] = (struct group){.first = g, .end = end};
        g = end;
    }
    /* The lookups in the store's memory are hinted a batch ahead, so that their cache misses
     * overlap: first the predictions, then, once their keys are known, the labels. */
    if (s->vt->hint_prediction)
        for (size_t g = 0; g < lw.num_groups; g++)
            s->vt->hint_prediction(s, m->name, lw.order[lw.groups[g].first]->id);
    op->result = MLS_OPR_OK;
    for (size_t g = 0; g < lw.num_groups; g++) {
        struct group *gr = &lw.groups[g];
        const char *id = lw.order[gr->first]->id;
        const char *combo = NULL;
        int r = s->vt->get_prediction(s, m->name, id, &gr->pred, &gr->pt, &combo);
        if (r < 0) {
            *failed = 1;
            break;
        }
        /* Expired: unknown at once, whether or not the upkeep deleted it yet; and so is a
         * prediction whose bucket the retention drops (its hour can end after its ttl). */
        int64_t start = 0;
        int32_t width = MLS_BUCKET;
        if (r)
            mls_bucket_of(gr->pt, now_s, w->registry->limits.rollup_after, &start, &width);
        if (r == 0 || mls_expired(gr->pt, cfg->prediction_ttl, now) ||
            start < now_s - cfg->retention) {
            note_unknown(op, id, gr->end - gr->first);
            continue;
        }
        const char *key = mls_wslots_key(sl, combo);
        struct slot *x = key ? mls_wslot_for(w, sl, op, m, key, NULL, start, width) : NULL;
        struct change *ch = x ? change_of(&lw, (size_t)(x - sl->items)) : NULL;
        if (!ch) {
            if (op->result == MLS_OPR_OK) {
                op->result = MLS_OPR_NOMEM;
                snprintf(op->message, sizeof(op->message), "out of memory applying labels");
            }
            break;
        }
        gr->known = 1;
        gr->change = (size_t)(ch - lw.changes);
    }
    if (s->vt->hint_label && op->result == MLS_OPR_OK && !*failed)
        for (size_t g = 0; g < lw.num_groups; g++)
            for (size_t e = lw.groups[g].first; lw.groups[g].known && e < lw.groups[g].end; e++)
                s->vt->hint_label(s, lw.groups[g].pred, elementwise ? lw.order[e]->slot : 0);
    for (size_t g = 0; g < lw.num_groups && op->result == MLS_OPR_OK && !*failed; g++) {
        struct group *gr = &lw.groups[g];
        if (!gr->known)
            continue;
        if (elementwise) {
            elementwise_group(w, &lw, op, gr, failed);
        } else if (s->vt->read_outputs(s, gr->pred, lw.outputs, 0, row_bytes, row_bytes)) {
            *failed = 1;
        } else {
            per_sample_group(w, &lw, op, &lw.changes[gr->change], lw.order + gr->first,
                             gr->end - gr->first, gr->pred, gr->pt, failed);
        }
    }
    /* The outputs last, all reads of the table together. */
    for (size_t g = 0; elementwise && g < lw.num_groups && op->result == MLS_OPR_OK && !*failed;
         g++)
        if (lw.groups[g].known && read_positions(s, &lw, &lw.groups[g]))
            *failed = 1;
    if (!*failed && op->result == MLS_OPR_OK && elementwise)
        elementwise_eval(op, &lw);
    /* Every change finite, alone and added to its bucket; then the labels are stored. */
    for (size_t i = 0; i < lw.num_changes && op->result == MLS_OPR_OK && !*failed; i++) {
        struct change *ch = &lw.changes[i];
        if (!mls_wfinite((const double *)&ch->total, (const double *)&ch->total,
                         (const double *)&ch->total, MLS_CELL_FIELDS) ||
            !mls_wfinite((const double *)ch->classes, (const double *)ch->classes,
                         (const double *)ch->classes, (size_t)lw.slots * MLS_CLASS_FIELDS) ||
            mls_wslot_overflows(&sl->items[ch->slot], &ch->total, ch->classes)) {
            op->result = MLS_OPR_OVERFLOW;
            snprintf(op->message, sizeof(op->message),
                     "with these labels the sums of a bucket of monitor %s would no longer be "
                     "finite (a weight too large): nothing was counted",
                     op->name);
        }
    }
    if (s->vt->hint_label && op->result == MLS_OPR_OK && !*failed)
        for (size_t i = 0; i < lw.num_pos; i++)
            s->vt->hint_label(s, lw.pos[i].pred, lw.pos[i].cls);
    for (size_t i = 0; i < lw.num_pos && op->result == MLS_OPR_OK && !*failed; i++) {
        const struct position *p = &lw.pos[i];
        *failed = s->vt->put_label(s, p->pred, p->cls, &p->after, op->time) != 0;
    }
    if (*failed) {
        work_free(&lw);
        return;
    }
    if (op->result != MLS_OPR_OK) {
        s->vt->undo(s);
        work_free(&lw);
        return;
    }
    if (s->vt->release(s)) {
        *failed = 1;
        work_free(&lw);
        return;
    }
    for (size_t i = 0; i < lw.num_changes; i++)
        mls_wslot_merge(&sl->items[lw.changes[i].slot], &lw.changes[i].total, lw.changes[i].classes,
                        lw.slots);
    work_free(&lw);
}

void mls_wlate_counts(struct mls_op *op)
{
    struct mls_monitor *m = op->monitor;
    if (op->result != MLS_OPR_OK || (op->kind != MLS_OP_PREDICT && op->kind != MLS_OP_LABEL))
        return;
    pthread_rwlock_wrlock(&m->lock);
    m->predictions_live += op->predictions_change;
    m->positions_live += op->positions_change;
    for (int64_t c = 0; m->labelled_live && op->labelled_change && c < m->cfg.num_classes; c++)
        m->labelled_live[c] += op->labelled_change[c];
    pthread_rwlock_unlock(&m->lock);
}
