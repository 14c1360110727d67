/*
 * late_http.c -- POST /v1/monitors/{name}/predictions and /labels (late.h): requests decoded
 * and checked here, on the worker thread, so that a bad one is refused whole before anything
 * reaches the writer; the writer thread stores them and answers once they are durable.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor_http.h"
#include "server.h"
#include "writer.h"

/* Rows of one predictions request, labels of one labels request: beyond, 413. Bounded before
 * anything is allocated for them (the body limit bounds the JSON itself). */
#define MAX_ROWS 100000
#define MAX_LABELS 1000000

struct late_op {
    struct mls_op op;
    struct mls_mcall *call;
};

static struct mls_monitor *find(struct mls_mcall *c)
{
    struct mls_monitor *m = mls_registry_get(&c->srv->monitors, c->name);
    if (!m)
        mls_mhttp_error(c, MLS_ERR_MONITOR_NOT_FOUND, "name",
                        "no monitor named %.130s (PUT /v1/monitors/%.130s creates one)", c->name,
                        c->name);
    return m;
}

/* The op of a request to c's monitor, holding a reference to it, with the body parsed into
 * *root; NULL when answered (no such monitor, a malformed body, no memory). */
static struct late_op *start(struct mls_mcall *c, json_t **root)
{
    struct mls_monitor *m = find(c);
    if (!m)
        return NULL;
    struct mlp_error err;
    int rc = mlp_parse(c->body ? c->body : "", c->len, root, &err);
    struct late_op *o = rc ? NULL : calloc(1, sizeof(*o));
    if (!o) {
        if (rc)
            mls_mhttp_status(c, rc, &err);
        else
            mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory");
        json_decref(*root);
        *root = NULL;
        mls_monitor_unref(m);
        return NULL;
    }
    o->op.monitor = m; /* the op's reference from here */
    return o;
}

/* Refuses a monitor that takes no predictions, saying why; 0 when it takes them. */
static int takes_predictions(struct mls_mcall *c, const struct mls_monitor *m)
{
    if (m->cfg.late)
        return 0;
    if (!m->cfg.num_classes)
        return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "name",
                               "monitor %s takes no predictions: its config has no classes "
                               "(a stored prediction has one output per class; give classes "
                               "or num_classes)",
                               m->name) -
               1;
    return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "name",
                           "monitor %s takes no predictions: its loss %s cannot mask one "
                           "label at a time (see prediction_ttl in the README)",
                           m->name, m->cfg.loss) -
           1;
}

/* Keys a request may have; -1 when answered. */
static int check_keys(struct mls_mcall *c, const json_t *root, const char *const *keys, size_t n,
                      const char *what)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)root, key, val)
    {
        size_t i = 0;
        while (i < n && strcmp(keys[i], key))
            i++;
        if (i == n)
            return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, key,
                                   "unknown field \"%.60s\" (%s)", key, what) -
                   1;
    }
    return 0;
}

/* Decodes the tensors of `root` named in `names` (with the monitor's loss, for the decoder)
 * into r; -1 when answered. */
static int decode_tensors(struct mls_mcall *c, const struct mls_monitor *m, const json_t *root,
                          const char *const *names, size_t n, struct mlp_request *r)
{
    json_t *req = json_object();
    int oom = !req || json_object_set_new(req, "loss", json_string(m->cfg.loss));
    for (size_t i = 0; i < n && !oom; i++) {
        json_t *v = json_object_get(root, names[i]);
        if (v)
            oom = json_object_set(req, names[i], v);
    }
    if (oom) {
        json_decref(req);
        return mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory") - 1;
    }
    struct mlp_error err;
    int rc = mlp_request_decode(req, r, &err);
    json_decref(req);
    if (rc)
        return mls_mhttp_status(c, rc, &err) - 1;
    return 0;
}

/* The ids array: n strings of 1..MLS_ID_MAX bytes; -1 when answered. */
static int check_ids(struct mls_mcall *c, const json_t *ids, size_t max)
{
    if (!json_is_array(ids) || json_array_size(ids) < 1)
        return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "ids",
                               "ids is an array of the predictions' ids (strings), one per row") -
               1;
    if (json_array_size(ids) > max)
        return mls_mhttp_error(c, MLS_ERR_TOO_LARGE, "ids", "%zu rows in one request; at most %zu",
                               json_array_size(ids), max) -
               1;
    for (size_t i = 0; i < json_array_size(ids); i++) {
        if (!mls_mhttp_string(json_array_get(ids, i), MLS_ID_MAX)) {
            char field[40];
            snprintf(field, sizeof(field), "ids[%zu]", i);
            return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, field,
                                   "an id is a string of 1 to %d bytes", MLS_ID_MAX) -
                   1;
        }
    }
    return 0;
}

/* A [rows, classes] tensor of the monitor's width; -1 when answered. */
static int check_matrix(struct mls_mcall *c, const struct mls_monitor *m, const struct ml_tensor *t,
                        const char *field, size_t rows)
{
    if (t->rank == 2 && t->shape[1] == m->cfg.num_classes && t->shape[0] != (int64_t)rows)
        return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "ids",
                               "%zu ids for %lld rows of %s: one id per row", rows,
                               (long long)t->shape[0], field) -
               1;
    if (t->rank != 2 || t->shape[0] != (int64_t)rows || t->shape[1] != m->cfg.num_classes)
        return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, field,
                               "%s has shape %s; one row of %lld values per id (%zu ids) was "
                               "expected: [%zu, %lld]",
                               field, t->rank == 2 ? "[rows, width]" : "of another rank",
                               (long long)m->cfg.num_classes, rows, rows,
                               (long long)m->cfg.num_classes) -
               1;
    return 0;
}

/* ---- predictions -------------------------------------------------------------------------- */

static void predictions_done(struct mls_op *op, void *cls)
{
    struct late_op *o = cls;
    struct mls_mcall *c = o->call;
    if (op->result == MLS_OPR_OK) {
        struct mlp_buf *b = c->out;
        mlp_buf_puts(b, "{\"monitor\":");
        mlp_buf_string(b, op->name);
        mlp_buf_puts(b, ",\"stored\":");
        mls_json_whole(b, (double)op->stored);
        mlp_buf_puts(b, ",\"refused\":[");
        int any = 0;
        for (size_t i = 0; i < op->num_rows; i++) {
            if (!op->refused[i])
                continue;
            mlp_buf_puts(b, any++ ? ",{\"index\":" : "{\"index\":");
            mls_json_whole(b, (double)i);
            mlp_buf_puts(b, ",\"id\":");
            mlp_buf_string(b, op->ids[i]);
            mlp_buf_puts(b, op->refused[i] == 1 ? ",\"reason\":\"already stored\"}"
                                                : ",\"reason\":\"repeated in this request\"}");
        }
        mlp_buf_puts(b, "],\"time\":");
        mlp_buf_number(b, op->time);
        mlp_buf_puts(b, ",\"bucket\":");
        mls_json_whole(b, (double)op->start);
        mlp_buf_puts(b, "}");
        c->status = 200;
    } else {
        mls_mhttp_refusal(c, op, op->result == MLS_OPR_LIMIT ? "slice" : "name");
    }
    mls_op_clear(op);
    free(o);
    c->finish(c);
}

static int by_string(const void *a, const void *b)
{
    return strcmp(**(char **const *)a, **(char **const *)b);
}

/* Marks ids repeated in the request (refused[i] = 2; the first occurrence is kept). */
static int mark_repeats(struct mls_op *op)
{
    char ***order = malloc(op->num_rows * sizeof(*order));
    if (!order)
        return -1;
    for (size_t i = 0; i < op->num_rows; i++)
        order[i] = &op->ids[i];
    qsort(order, op->num_rows, sizeof(*order), by_string);
    /* Each run of equal ids: all but the one at the lowest position are repeats. */
    for (size_t i = 0; i < op->num_rows;) {
        size_t e = i + 1, first = (size_t)(order[i] - op->ids);
        while (e < op->num_rows && !strcmp(*order[e], *order[i])) {
            size_t at = (size_t)(order[e] - op->ids);
            first = at < first ? at : first;
            e++;
        }
        for (size_t k = i; k < e; k++)
            if ((size_t)(order[k] - op->ids) != first)
                op->refused[order[k] - op->ids] = 2;
        i = e;
    }
    free(order);
    return 0;
}

int mls_late_predictions(struct mls_mcall *c)
{
    json_t *root = NULL;
    struct late_op *o = start(c, &root);
    if (!o)
        return 0;
    struct mls_monitor *m = o->op.monitor;
    struct mls_op *op = &o->op;
    int rc;
    const struct mls_mconfig *cfg = &m->cfg;
    static const char *const keys[] = {"ids", "logits", "predictions", "time", "slice"};
    const char *input = m->late.predictions ? "predictions" : "logits";
    const char *other = m->late.predictions ? "logits" : "predictions";
    struct mlp_request r;
    memset(&r, 0, sizeof(r));
    const json_t *ids = json_object_get(root, "ids");
    if (!json_is_object(root)) {
        mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "",
                        "predictions are a JSON object {\"ids\", \"%s\", \"time\", \"slice\"}",
                        input);
        goto out;
    }
    if (takes_predictions(c, m) ||
        check_keys(c, root, keys, sizeof(keys) / sizeof(keys[0]),
                   "predictions have ids, logits or predictions, time and slice"))
        goto out;
    if (json_object_get(root, other)) {
        mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, other,
                        "monitor %s's loss %s takes \"%s\", not \"%s\"", m->name, cfg->loss, input,
                        other);
        goto out;
    }
    if (!json_object_get(root, input)) {
        mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, input,
                        "predictions need \"%s\": one row of %lld values per id", input,
                        (long long)cfg->num_classes);
        goto out;
    }
    if (check_ids(c, ids, MAX_ROWS))
        goto out;
    size_t rows = json_array_size(ids);
    /* Bounded before the decoding allocates: the rows the ids announce, times the width. */
    if (c->exec && c->exec->max_elements &&
        (double)rows * (double)cfg->num_classes > (double)c->exec->max_elements) {
        mls_mhttp_error(c, MLS_ERR_TOO_LARGE, input,
                        "%zu rows of %lld values is more than the server's limit of %lld "
                        "elements",
                        rows, (long long)cfg->num_classes, (long long)c->exec->max_elements);
        goto out;
    }
    if (decode_tensors(c, m, root, &input, 1, &r))
        goto out;
    const struct ml_tensor *t = m->late.predictions ? r.req.predictions : r.req.logits;
    if (check_matrix(c, m, t, input, rows))
        goto out;
    double now = mls_now();
    static const struct mls_meta_names names = {"time", "slice", "id"};
    if (mls_mhttp_meta(c, m, json_object_get(root, "time"), json_object_get(root, "slice"), NULL,
                       &names, op, &op->time, now))
        goto out;
    if (mls_expired(op->time, cfg->prediction_ttl, now)) {
        mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "time",
                        "time %.3f is older than the monitor's prediction_ttl (%lld s): these "
                        "predictions could take no label",
                        op->time, (long long)cfg->prediction_ttl);
        goto out;
    }
    /* The rows, in the monitor's precision; finite (as observations). */
    size_t esize = cfg->f64 ? sizeof(double) : sizeof(float);
    int64_t nc = cfg->num_classes, total = (int64_t)rows * nc;
    op->num_rows = rows;
    op->row_bytes = (size_t)nc * esize;
    op->outputs = malloc(rows * op->row_bytes);
    op->ids = calloc(rows, sizeof(*op->ids));
    op->refused = calloc(rows, 1);
    op->labelled_change = calloc((size_t)nc, sizeof(double));
    op->classes = calloc((size_t)mls_class_slots(cfg), sizeof(*op->classes));
    if (!op->outputs || !op->ids || !op->refused || !op->classes || !op->labelled_change) {
        mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory");
        goto out;
    }
    for (int64_t i = 0; i < total; i++) {
        double v = mls_tensor_at(t, i);
        if (!isfinite(v) || (!cfg->f64 && !isfinite((float)v))) {
            char field[64];
            snprintf(field, sizeof(field), "%s[%lld][%lld]", input, (long long)(i / nc),
                     (long long)(i % nc));
            mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, field,
                            "a stored prediction keeps counting until it expires, where a NaN "
                            "or infinity would be in every figure: values must be finite%s",
                            cfg->f64 ? "" : " (in float32, the monitor's dtype)");
            goto out;
        }
        if (cfg->f64)
            ((double *)op->outputs)[i] = v;
        else
            ((float *)op->outputs)[i] = (float)v;
    }
    for (size_t i = 0; i < rows; i++)
        if (!(op->ids[i] = strdup(json_string_value(json_array_get(ids, i))))) {
            mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory");
            goto out;
        }
    /* One unlabelled row's sums: what each stored row adds (late.h). */
    struct ml_sums row, *cls = calloc((size_t)nc, sizeof(*cls));
    double *work = malloc(3 * (size_t)nc * sizeof(double));
    struct ml_error e;
    rc =
        cls && work ? mls_late_row(&m->late, op->outputs, NULL, 0, &row, cls, work, &e) : ML_ENOMEM;
    if (!rc) {
        op->total.s = row;
        for (int64_t k = 0; k < nc; k++)
            op->classes[k] =
                (struct mls_class_sums){cls[k].weighted_sum, cls[k].denominator, cls[k].sum_weights,
                                        cls[k].num_nonzero_weights, cls[k].sum_sq};
    }
    free(cls);
    free(work);
    if (rc) {
        struct mlp_error pe;
        memset(&pe, 0, sizeof(pe));
        pe.e = e;
        if (rc == ML_ENOMEM)
            mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory");
        else
            mls_mhttp_status(c, rc, &pe);
        goto out;
    }
    int64_t bad;
    struct ml_error ce;
    rc = mls_late_check_rows(&m->late, (int64_t)rows, op->outputs, &bad, &ce);
    if (rc == 1) {
        char field[64];
        snprintf(field, sizeof(field), "%s[%lld][%lld]", input, (long long)(bad / nc),
                 (long long)(bad % nc));
        mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, field,
                        "%s's loss of this output is not finite for a label of 0 or 1 (%s of "
                        "a probability outside [0, 1]?): it could take no label",
                        cfg->loss, input);
        goto out;
    }
    if (rc) {
        struct mlp_error pe;
        memset(&pe, 0, sizeof(pe));
        pe.e = ce;
        mls_mhttp_status(c, rc, &pe);
        goto out;
    }
    if (mark_repeats(op)) {
        mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory");
        goto out;
    }
    mls_metrics_elements(&c->srv->metrics, cfg->loss, (long long)total);
    mlp_request_free(&r);
    json_decref(root);
    o->call = c;
    return mls_mhttp_hand_over(c, op, MLS_OP_PREDICT, m->name, predictions_done, o);
out:
    mlp_request_free(&r);
    json_decref(root);
    mls_op_clear(op);
    free(o);
    return 0;
}

/* ---- labels -----------------------------------------------------------------------------------
 */

static void labels_done(struct mls_op *op, void *cls)
{
    struct late_op *o = cls;
    struct mls_mcall *c = o->call;
    if (op->result == MLS_OPR_OK || op->result == MLS_OPR_DUPLICATE) {
        struct mlp_buf *b = c->out;
        mlp_buf_puts(b, "{\"monitor\":");
        mlp_buf_string(b, op->name);
        mlp_buf_puts(b, ",\"applied\":");
        mls_json_whole(b, (double)op->applied);
        mlp_buf_puts(b, ",\"replaced\":");
        mls_json_whole(b, (double)op->replaced);
        mlp_buf_puts(b, ",\"unknown\":");
        mls_json_whole(b, (double)op->unknown);
        mlp_buf_puts(b, ",\"unknown_ids\":[");
        for (size_t i = 0; i < op->num_unknown_ids; i++) {
            if (i)
                mlp_buf_puts(b, ",");
            mlp_buf_string(b, op->unknown_ids[i]);
        }
        mlp_buf_puts(b, op->result == MLS_OPR_DUPLICATE ? "],\"duplicate\":true}"
                                                        : "],\"duplicate\":false}");
        c->status = 200;
    } else {
        mls_mhttp_refusal(c, op, "name");
    }
    mls_op_clear(op);
    free(o);
    c->finish(c);
}

/* A class given by index or by name; -1 when answered. */
static int class_of(struct mls_mcall *c, const struct mls_mconfig *cfg, const json_t *v,
                    const char *field, int32_t *out)
{
    if (json_is_number(v)) {
        double d = json_number_value(v);
        if (d >= 0 && d < (double)cfg->num_classes && d == floor(d)) {
            *out = (int32_t)d;
            return 0;
        }
    } else if (json_is_string(v) && cfg->class_names) {
        for (int64_t i = 0; i < cfg->num_classes; i++)
            if (!strcmp(cfg->class_names[i], json_string_value(v))) {
                *out = (int32_t)i;
                return 0;
            }
        return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, field,
                               "\"%.60s\" is not a class of this monitor (its config lists "
                               "them in \"classes\")",
                               json_string_value(v)) -
               1;
    }
    return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, field,
                           "class is an index from 0 to %lld%s", (long long)cfg->num_classes - 1,
                           cfg->class_names ? " or a class name" : "") -
           1;
}

/* Whether a label's value and weight are valid (the checks that answer follow). */
static int value_in(const struct mls_mconfig *cfg, double v)
{
    return cfg->late_regression ? isfinite(v) : (v >= 0 && v <= 1);
}

static int weight_in(const struct mls_mconfig *cfg, double w)
{
    return w >= 0 && w <= MLS_LABEL_WEIGHT_MAX && (cfg->late != MLS_LATE_TORCH_CE || w == 1);
}

/* A label's value; -1 when answered. */
static int value_ok(struct mls_mcall *c, const struct mls_mconfig *cfg, double v, const char *field)
{
    if (value_in(cfg, v))
        return 0;
    return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, field,
                           cfg->late_regression ? "a label's value is a finite number"
                                                : "a label's value is a number from 0 to 1") -
           1;
}

/* A label's weight; -1 when answered. */
static int weight_ok(struct mls_mcall *c, const struct mls_mconfig *cfg, double w,
                     const char *field)
{
    if (!(w >= 0 && w <= MLS_LABEL_WEIGHT_MAX))
        return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, field,
                               "a label's weight is a number from 0 to %g (default 1): a label "
                               "given again is replaced by subtracting its old part of the "
                               "sums, exact while the parts stay small",
                               MLS_LABEL_WEIGHT_MAX) -
               1;
    if (cfg->late == MLS_LATE_TORCH_CE && w != 1)
        return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, field,
                               "cross_entropy weighs classes, not samples: a label's weight "
                               "must be 1") -
               1;
    return 0;
}

/* The sparse form: {"labels": [{"id", "class", "value", "weight"}]}; -1 when answered. */
static int sparse_labels(struct mls_mcall *c, const struct mls_monitor *m, const json_t *list,
                         struct mls_op *op)
{
    const struct mls_mconfig *cfg = &m->cfg;
    int per_sample = cfg->late != MLS_LATE_ELEMENTWISE;
    size_t n = json_array_size(list);
    if (n > MAX_LABELS)
        return mls_mhttp_error(c, MLS_ERR_TOO_LARGE, "labels",
                               "%zu labels in one request; at most %d", n, MAX_LABELS) -
               1;
    if (!(op->labels = calloc(n ? n : 1, sizeof(*op->labels))))
        return mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory") - 1;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(list, i);
        /* (a field's name is written only for an error: a request holds many labels) */
        char field[64];
#define AT(part) (snprintf(field, sizeof(field), "labels[%zu]" part, i), field)
        if (!json_is_object(e))
            return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, AT(""),
                                   per_sample ? "a label is {\"id\", \"class\", \"weight\"}"
                                              : "a label is {\"id\", \"class\", \"value\", "
                                                "\"weight\"}") -
                   1;
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)e, key, val)
        {
            if (strcmp(key, "id") && strcmp(key, "class") && strcmp(key, "value") &&
                strcmp(key, "weight")) {
                snprintf(field, sizeof(field), "labels[%zu].%.40s", i, key);
                return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, field,
                                       "unknown field (a label has id, class, value, weight)") -
                       1;
            }
        }
        struct mls_label_in *in = &op->labels[op->num_labels];
        const json_t *id = json_object_get(e, "id");
        if (!mls_mhttp_string(id, MLS_ID_MAX))
            return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, AT(".id"),
                                   "id is the prediction's id, a string of 1 to %d bytes",
                                   MLS_ID_MAX) -
                   1;
        const json_t *cls = json_object_get(e, "class");
        if (!cls)
            return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, AT(".class"),
                                   "a label needs its class (an index or a name)") -
                   1;
        double ci = json_is_number(cls) ? json_number_value(cls) : -1;
        if (ci >= 0 && ci < (double)cfg->num_classes && ci == floor(ci))
            in->l.cls = (int32_t)ci;
        else if (class_of(c, cfg, cls, AT(".class"), &in->l.cls))
            return -1;
        const json_t *value = json_object_get(e, "value");
        if (per_sample) {
            if (value)
                return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, AT(".value"),
                                       "%s takes one class per prediction: the class is the "
                                       "label, there is no value",
                                       cfg->loss) -
                       1;
            in->l.value = 1;
        } else {
            if (!json_is_number(value))
                return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, AT(".value"),
                                       "a label needs its value, a number") -
                       1;
            in->l.value = json_number_value(value);
            if (!value_in(cfg, in->l.value) && value_ok(c, cfg, in->l.value, AT(".value")))
                return -1;
        }
        const json_t *weight = json_object_get(e, "weight");
        in->l.weight = 1;
        if (weight && !json_is_null(weight)) {
            if (!json_is_number(weight))
                return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, AT(".weight"),
                                       "a label's weight is a number >= 0") -
                       1;
            in->l.weight = json_number_value(weight);
        }
        if (!weight_in(cfg, in->l.weight) && weight_ok(c, cfg, in->l.weight, AT(".weight")))
            return -1;
#undef AT
        in->slot = per_sample ? 0 : in->l.cls;
        in->row = (int64_t)i;
        in->col = -1;
        if (!(in->id = strdup(json_string_value(id))))
            return mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory") - 1;
        op->num_labels++;
    }
    return 0;
}

/* The dense form: {"ids": [...], "labels": [[...]], "mask": [[...]]}; -1 when answered. */
static int dense_labels(struct mls_mcall *c, const struct mls_monitor *m, const json_t *root,
                        struct mls_op *op)
{
    const struct mls_mconfig *cfg = &m->cfg;
    if (cfg->late != MLS_LATE_ELEMENTWISE)
        return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "labels",
                               "%s takes one class per prediction: send {\"labels\": [{\"id\", "
                               "\"class\"}, ...]}",
                               cfg->loss) -
               1;
    const json_t *ids = json_object_get(root, "ids");
    if (check_ids(c, ids, MAX_ROWS))
        return -1;
    size_t rows = json_array_size(ids);
    int64_t nc = cfg->num_classes;
    if ((double)rows * (double)nc > MAX_LABELS)
        return mls_mhttp_error(c, MLS_ERR_TOO_LARGE, "labels",
                               "%zu rows of %lld labels in one request; at most %d labels", rows,
                               (long long)nc, MAX_LABELS) -
               1;
    static const char *const names[] = {"labels", "mask", "weights"};
    struct mlp_request r;
    if (decode_tensors(c, m, root, names, 3, &r))
        return -1;
    int rc = -1;
    const struct ml_tensor *lab = r.req.labels, *mask = r.req.weights;
    const char *mask_name = json_object_get(root, "mask") ? "mask" : "weights";
    if (check_matrix(c, m, lab, "labels", rows) ||
        (mask && check_matrix(c, m, mask, mask_name, rows)))
        goto out;
    size_t known = 0;
    for (int64_t i = 0; i < (int64_t)rows * nc; i++)
        known += !mask || mls_tensor_at(mask, i) != 0;
    if (!(op->labels = calloc(known ? known : 1, sizeof(*op->labels)))) {
        mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory");
        goto out;
    }
    for (int64_t i = 0; i < (int64_t)rows * nc; i++) {
        double w = mask ? mls_tensor_at(mask, i) : 1;
        if (w == 0)
            continue;
        char field[64];
        double v = mls_tensor_at(lab, i);
        if (!weight_in(cfg, w)) {
            snprintf(field, sizeof(field), "%s[%lld][%lld]", mask_name, (long long)(i / nc),
                     (long long)(i % nc));
            weight_ok(c, cfg, w, field);
            goto out;
        }
        if (!value_in(cfg, v)) {
            snprintf(field, sizeof(field), "labels[%lld][%lld]", (long long)(i / nc),
                     (long long)(i % nc));
            value_ok(c, cfg, v, field);
            goto out;
        }
        struct mls_label_in *in = &op->labels[op->num_labels];
        in->l = (struct mls_label){(int32_t)(i % nc), v, w, 0};
        in->slot = in->l.cls;
        in->row = i / nc;
        in->col = (int32_t)(i % nc);
        if (!(in->id = strdup(json_string_value(json_array_get(ids, (size_t)(i / nc)))))) {
            mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory");
            goto out;
        }
        op->num_labels++;
    }
    rc = 0;
out:
    mlp_request_free(&r);
    return rc;
}

int mls_late_labels(struct mls_mcall *c)
{
    json_t *root = NULL;
    struct late_op *o = start(c, &root);
    if (!o)
        return 0;
    struct mls_monitor *m = o->op.monitor;
    struct mls_op *op = &o->op;
    static const char *const keys[] = {"labels", "ids", "mask", "weights", "id", "time"};
    if (!json_is_object(root)) {
        mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "",
                        "labels are a JSON object {\"labels\": [{\"id\", \"class\", \"value\"}]}");
        goto out;
    }
    if (takes_predictions(c, m) ||
        check_keys(c, root, keys, sizeof(keys) / sizeof(keys[0]),
                   "labels have labels, or ids, labels and mask; and id, time"))
        goto out;
    const json_t *list = json_object_get(root, "labels");
    if (!list) {
        mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "labels",
                        "labels need \"labels\": [{\"id\", \"class\", \"value\", \"weight\"}] or, "
                        "with \"ids\", rows of labels");
        goto out;
    }
    int dense = json_object_get(root, "ids") != NULL;
    if (!dense && (json_object_get(root, "mask") || json_object_get(root, "weights"))) {
        mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "ids",
                        "a mask goes with dense labels, which need \"ids\" (one per row)");
        goto out;
    }
    if (!dense && !json_is_array(list)) {
        mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "labels",
                        "labels is an array of {\"id\", \"class\", \"value\", \"weight\"}");
        goto out;
    }
    if (dense ? dense_labels(c, m, root, op) : sparse_labels(c, m, list, op))
        goto out;
    /* The label time (for delays); an id makes a retry count once. */
    double now = mls_now(), when = now;
    const json_t *t = json_object_get(root, "time");
    if (t && !json_is_null(t)) {
        if (mls_time_parse(t, &when) || when > now + MLS_MAX_FUTURE) {
            mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "time",
                            "time is when the labels became known: Unix seconds or RFC 3339, "
                            "at most %d s ahead of the server's clock",
                            MLS_MAX_FUTURE);
            goto out;
        }
    }
    op->time = when;
    op->t = (int64_t)now;
    const json_t *id = json_object_get(root, "id");
    if (id && !json_is_null(id)) {
        if (!mls_mhttp_string(id, MLS_ID_MAX)) {
            mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "id",
                            "id is the request's idempotency key, a string of 1 to %d bytes",
                            MLS_ID_MAX);
            goto out;
        }
        snprintf(op->id, sizeof(op->id), "%s", json_string_value(id));
    }
    json_decref(root);
    mls_op_sort_labels(op); /* here, off the writer thread */
    o->call = c;
    return mls_mhttp_hand_over(c, op, MLS_OP_LABEL, m->name, labels_done, o);
out:
    json_decref(root);
    mls_op_clear(op);
    free(o);
    return 0;
}
