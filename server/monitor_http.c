/*
 * monitor_http.c -- the /v1/monitors routes: decoding, checks and answers. Reads run here,
 * on the worker thread; changes are handed to the writer thread (writer.h), which answers
 * once they are durable.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "errors.h"
#include "mlp_v2.h"
#include "monitor_http.h"
#include "server.h"

static const char prefix[] = "/v1/monitors";

enum mls_route mls_monitor_route_of(const char *url, char *name, size_t size)
{
    size_t np = sizeof(prefix) - 1;
    name[0] = '\0';
    if (strncmp(url, prefix, np))
        return MLS_ROUTE_OTHER;
    const char *p = url + np;
    if (!*p)
        return MLS_ROUTE_MONITORS;
    if (*p++ != '/' || !*p)
        return MLS_ROUTE_OTHER;
    const char *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n < size) { /* longer names stay "": not a valid name, and not found */
        memcpy(name, p, n);
        name[n] = '\0';
    }
    if (!slash)
        return MLS_ROUTE_MONITOR;
    if (!strcmp(slash, "/observe"))
        return MLS_ROUTE_MONITOR_OBSERVE;
    if (!strcmp(slash, "/series"))
        return MLS_ROUTE_MONITOR_SERIES;
    if (!strcmp(slash, "/predictions"))
        return MLS_ROUTE_MONITOR_PREDICTIONS;
    if (!strcmp(slash, "/labels"))
        return MLS_ROUTE_MONITOR_LABELS;
    return MLS_ROUTE_OTHER;
}

int mls_monitor_adds(enum mls_route route)
{
    return route == MLS_ROUTE_MONITOR_OBSERVE || route == MLS_ROUTE_MONITOR_PREDICTIONS ||
           route == MLS_ROUTE_MONITOR_LABELS;
}

const char *mls_monitor_methods(enum mls_route route)
{
    if (mls_monitor_adds(route))
        return "POST";
    switch (route) {
    case MLS_ROUTE_MONITOR:
        return "GET, HEAD, PUT, DELETE";
    default:
        return "GET, HEAD";
    }
}

int mls_monitor_force(const char *v)
{
    if (!strcmp(v, "true") || !strcmp(v, "1"))
        return 1;
    return !strcmp(v, "false") || !strcmp(v, "0") ? 0 : -1;
}

int mls_monitor_method_ok(enum mls_route route, const char *method)
{
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (mls_monitor_adds(route))
        return !strcmp(method, "POST");
    switch (route) {
    case MLS_ROUTE_MONITOR:
        return get || !strcmp(method, "PUT") || !strcmp(method, "DELETE");
    default:
        return get;
    }
}

int mls_monitor_takes_body(enum mls_route route, const char *method)
{
    return mls_monitor_adds(route) || (route == MLS_ROUTE_MONITOR && !strcmp(method, "PUT"));
}

/* The one table of query arguments: which route and method take each, where it is kept. */
static const struct {
    const char *name;
    enum mls_route route;
    const char *method;
    size_t off, size; /* size 0: repeated, into slices */
} query_args[] = {
    {"force", MLS_ROUTE_MONITOR, "PUT", offsetof(struct mls_query, force),
     sizeof(((struct mls_query *)0)->force)},
    {"step", MLS_ROUTE_MONITOR_SERIES, "GET", offsetof(struct mls_query, step),
     sizeof(((struct mls_query *)0)->step)},
    {"from", MLS_ROUTE_MONITOR_SERIES, "GET", offsetof(struct mls_query, from),
     sizeof(((struct mls_query *)0)->from)},
    {"to", MLS_ROUTE_MONITOR_SERIES, "GET", offsetof(struct mls_query, to),
     sizeof(((struct mls_query *)0)->to)},
    {"slice", MLS_ROUTE_MONITOR_SERIES, "GET", 0, 0},
    {"class", MLS_ROUTE_MONITOR_SERIES, "GET", offsetof(struct mls_query, cls),
     sizeof(((struct mls_query *)0)->cls)},
};
#define NUM_QUERY_ARGS (sizeof(query_args) / sizeof(query_args[0]))

static int query_arg_here(size_t i, enum mls_route route, const char *method)
{
    if (!strcmp(method, "HEAD"))
        method = "GET";
    return query_args[i].route == route && !strcmp(query_args[i].method, method);
}

void mls_query_takes(enum mls_route route, const char *method, char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < NUM_QUERY_ARGS; i++)
        if (query_arg_here(i, route, method) && n < size)
            n += (size_t)snprintf(buf + n, size - n, "%s%s%s", n ? ", " : "", query_args[i].name,
                                  query_args[i].size ? "" : " (repeated)");
    if (!n)
        snprintf(buf, size, "none");
}

enum MHD_Result mls_query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                              const char *value)
{
    struct mls_query *q = cls;
    (void)kind;
    if (q->bad[0])
        return MHD_NO;
    const char *v = value ? value : "";
    if (!*key) {
        if (!*v)
            return MHD_YES; /* an empty segment ("?&", "a=1&&b=2"): nothing asked */
        snprintf(q->bad, sizeof(q->bad), "(no name)");
        snprintf(q->why, sizeof(q->why), "a value without a name");
        return MHD_NO;
    }
    snprintf(q->why, sizeof(q->why), "not one it takes");
    for (size_t i = 0; i < NUM_QUERY_ARGS; i++) {
        if (strcmp(key, query_args[i].name) || !query_arg_here(i, q->route, q->method))
            continue;
        /* (a slice is repeated into slices; the others are kept once, NUL-terminated) */
        size_t size = query_args[i].size ? query_args[i].size : sizeof(q->slices[0]);
        char *field;
        if (query_args[i].size)
            field = (char *)q + query_args[i].off;
        else
            field = q->num_slices < MLS_QUERY_MAX ? q->slices[q->num_slices] : NULL;
        if (!field)
            snprintf(q->why, sizeof(q->why), "repeated more than %d times", MLS_QUERY_MAX);
        else if (query_args[i].size && field[0])
            snprintf(q->why, sizeof(q->why), "repeated");
        else if (!*v && query_args[i].size)
            snprintf(q->why, sizeof(q->why), "empty");
        else if (strlen(v) >= size)
            snprintf(q->why, sizeof(q->why), "too long (at most %zu bytes)", size - 1);
        else {
            strcpy(field, v);
            q->num_slices += !query_args[i].size;
            return MHD_YES;
        }
        break;
    }
    snprintf(q->bad, sizeof(q->bad), "%.60s", key);
    return MHD_NO;
}

/* ---- Answers ------------------------------------------------------------------------------- */

int mls_mhttp_error(struct mls_mcall *c, enum mls_error e, const char *field, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    mls_error_write(c->out, mls_error_name(e), field, msg);
    c->status = mls_error_status(e);
    return 0;
}

/* A library or protocol failure, as /v1/loss answers it. */
int mls_mhttp_status(struct mls_mcall *c, int rc, const struct mlp_error *err)
{
    mlp_error_write(c->out, rc, err);
    c->status = rc == MLP_EMALFORMED ? 400 : rc == ML_ETOOLARGE ? 413 : rc == ML_ENOMEM ? 503 : 422;
    return 0;
}

/* A JSON string of 1..max bytes without NUL. */
int mls_mhttp_string(const json_t *v, size_t max)
{
    return json_is_string(v) && json_string_length(v) >= 1 && json_string_length(v) <= max &&
           strlen(json_string_value(v)) == json_string_length(v);
}

/* The answer to an op the writer refused: one table for every route. `field` is where the
 * request named what the refusal is about (the name, the config, the slice). */
void mls_mhttp_refusal(struct mls_mcall *c, const struct mls_op *op, const char *field)
{
    static const struct {
        enum mls_op_result result;
        enum mls_error error;
    } table[] = {
        {MLS_OPR_NOT_FOUND, MLS_ERR_MONITOR_NOT_FOUND},
        {MLS_OPR_CONFLICT, MLS_ERR_MONITOR_CONFLICT},
        {MLS_OPR_STALE, MLS_ERR_MONITOR_CONFLICT},
        {MLS_OPR_LIMIT, MLS_ERR_LIMIT_EXCEEDED},
        {MLS_OPR_NOMEM, MLS_ERR_OUT_OF_MEMORY},
        {MLS_OPR_OVERFLOW, MLS_ERR_INVALID_OBSERVATION},
        {MLS_OPR_INVALID, MLS_ERR_INVALID_OBSERVATION},
    };
    enum mls_error e = MLS_ERR_STATE_UNAVAILABLE; /* MLS_OPR_STORE */
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (table[i].result == op->result)
            e = table[i].error;
    if (op->result == MLS_OPR_NOT_FOUND)
        mls_mhttp_error(c, e, field, "no monitor named %s", op->name);
    else
        mls_mhttp_error(c, e,
                        op->field[0]                                                   ? op->field
                        : e == MLS_ERR_LIMIT_EXCEEDED || e == MLS_ERR_MONITOR_CONFLICT ? field
                                                                                       : "",
                        "%s", op->message);
}

/* Makes op the change the caller submits to the writer (mls_mcall.submit); returns 1. */
int mls_mhttp_hand_over(struct mls_mcall *c, struct mls_op *op, enum mls_op_kind kind,
                        const char *name, void (*done)(struct mls_op *, void *), void *self)
{
    op->kind = kind;
    snprintf(op->name, sizeof(op->name), "%s", name);
    op->done = done;
    op->cls = self;
    c->submit = op;
    return 1;
}

/* ---- Create, replace, delete -------------------------------------------------------------- */

struct put_op {
    struct mls_op op;
    struct mls_mcall *call;
    char *config; /* the normalized config, for the answer */
};

static void put_done(struct mls_op *op, void *cls)
{
    struct put_op *p = cls;
    struct mls_mcall *c = p->call;
    if (op->result == MLS_OPR_CREATED || op->result == MLS_OPR_SAME ||
        op->result == MLS_OPR_REPLACED) {
        mlp_buf_puts(c->out, "{\"name\":");
        mlp_buf_string(c->out, op->name);
        mlp_buf_puts(c->out, ",\"config\":");
        mlp_buf_puts(c->out, p->config);
        mlp_buf_puts(c->out, "}");
        c->status = op->result == MLS_OPR_CREATED ? 201 : 200;
    } else {
        mls_mhttp_refusal(c, op, op->result == MLS_OPR_CONFLICT ? "config" : "name");
    }
    mls_op_clear(op);
    free(p->config);
    free(p);
    c->finish(c);
}

static int do_put(struct mls_mcall *c)
{
    struct mls_server *s = c->srv;
    if (!mls_monitor_name_ok(c->name))
        return mls_mhttp_error(c, MLS_ERR_INVALID_MONITOR, "name",
                               "a monitor's name is 1 to %d characters from A-Z a-z 0-9 _ . -",
                               MLS_MONITOR_NAME_MAX);
    int force = c->query->force[0] ? mls_monitor_force(c->query->force) : 0;
    if (force < 0)
        return mls_mhttp_error(c, MLS_ERR_INVALID_QUERY, "force", "force is true or false");
    json_t *root = NULL;
    struct mlp_error err;
    int rc = mlp_parse(c->body ? c->body : "", c->len, &root, &err);
    if (rc)
        return mls_mhttp_status(c, rc, &err);
    struct put_op *p = calloc(1, sizeof(*p));
    if (!p) {
        json_decref(root);
        return mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory");
    }
    rc = mls_mconfig_parse(root, &s->monitors.limits, &p->op.cfg, &err);
    json_decref(root);
    if (rc) {
        free(p);
        if (rc == ML_ENOMEM)
            return mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, err.e.field, "%s", err.e.message);
        return mls_mhttp_error(
            c, rc == MLS_CFG_LIMIT ? MLS_ERR_LIMIT_EXCEEDED : MLS_ERR_INVALID_MONITOR, err.e.field,
            "%s", err.e.message);
    }
    if (!(p->config = strdup(p->op.cfg.json))) {
        mls_op_clear(&p->op);
        free(p);
        return mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory");
    }
    p->op.force = force;
    p->call = c;
    return mls_mhttp_hand_over(c, &p->op, MLS_OP_PUT, c->name, put_done, p);
}

struct delete_op {
    struct mls_op op;
    struct mls_mcall *call;
};

static void delete_done(struct mls_op *op, void *cls)
{
    struct delete_op *d = cls;
    struct mls_mcall *c = d->call;
    if (op->result == MLS_OPR_OK)
        c->status = 204;
    else
        mls_mhttp_refusal(c, op, "name");
    mls_op_clear(op);
    free(d);
    c->finish(c);
}

static int do_delete(struct mls_mcall *c)
{
    struct delete_op *d = calloc(1, sizeof(*d));
    if (!d)
        return mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory");
    d->call = c;
    return mls_mhttp_hand_over(c, &d->op, MLS_OP_DELETE, c->name, delete_done, d);
}

/* ---- Observe ------------------------------------------------------------------------------ */

struct observe_op {
    struct mls_op op;
    struct mls_mcall *call;
    double loss;
    struct ml_sums sums;
    double time;
    /* The answer, written on the worker before the commit with `"duplicate":false` (v2:
     * `"monitor_duplicate":false`), so that the writer thread only hands it over. */
    int v2;
    struct mlp_buf out;
    size_t header_len; /* v2: the JSON header's length in out */
};

/* The member the answer carries; a duplicate's is the same length, so that a v2 JSON
 * header's length and the binary data after it stay where they are. */
static const char dup_false[] = "duplicate\":false";
static const char dup_true[] = "duplicate\":true ";
_Static_assert(sizeof(dup_false) == sizeof(dup_true), "same length");

/* Writes the /v1 answer into o->out (before the commit). */
static void observe_write(struct observe_op *o)
{
    struct mlp_buf *b = &o->out;
    mlp_buf_puts(b, "{\"monitor\":");
    mlp_buf_string(b, o->op.name);
    static const char *const names[] = {
        "loss",     "weighted_sum", "denominator", "sum_weights", "num_nonzero_weights",
        "elements", "samples",      "time",        "bucket"};
    const double v[] = {o->loss,
                        o->sums.weighted_sum,
                        o->sums.denominator,
                        o->sums.sum_weights,
                        o->sums.num_nonzero_weights,
                        o->sums.elements,
                        o->sums.samples,
                        o->time,
                        (double)(o->op.start)};
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        mlp_buf_puts(b, ",\"");
        mlp_buf_puts(b, names[i]);
        mlp_buf_puts(b, "\":");
        if (i >= 4 && i != 7) /* counts and the bucket */
            mls_json_whole(b, v[i]);
        else
            mlp_buf_number(b, v[i]);
    }
    mlp_buf_puts(b, ",\"");
    mlp_buf_puts(b, dup_false);
    mlp_buf_puts(b, "}");
    o->header_len = b->len;
}

/* Hands the answer written before the commit over, marked as a duplicate when it was one. */
static void observe_answer(struct observe_op *o)
{
    struct mls_mcall *c = o->call;
    if (o->op.result == MLS_OPR_DUPLICATE) {
        /* The first occurrence is ours: a string in the header (the id) escapes its quotes,
         * and the member comes before anything the request sent is echoed (v2's id comes
         * first, but escaped). */
        char *p = o->out.data ? strstr(o->out.data, dup_false) : NULL;
        if (p && (size_t)(p - o->out.data) < o->header_len)
            memcpy(p, dup_true, sizeof(dup_true) - 1);
    }
    *c->out = o->out;
    if (c->out_header_len && o->v2)
        *c->out_header_len = o->header_len;
    o->out = (struct mlp_buf){0};
    c->status = 200;
}

static void observe_done(struct mls_op *op, void *cls)
{
    struct observe_op *o = cls;
    struct mls_mcall *c = o->call;
    if (op->result == MLS_OPR_OK || op->result == MLS_OPR_DUPLICATE) {
        observe_answer(o);
    } else {
        mls_mhttp_refusal(c, op,
                          op->result != MLS_OPR_LIMIT ? "name"
                          : o->v2                     ? "parameters.monitor_slice"
                                                      : "slice");
        if (o->v2 && c->status == 422)
            c->status = 400; /* v2 answers a client's mistake 400 */
    }
    if (o->v2 && c->status != 200)
        *c->out_header_len = c->out->len;
    mls_op_clear(op);
    free(o->out.data);
    free(o);
    c->finish(c);
}

/* Keys an observation may carry beside its tensors, and those that come from the config. */
static const char *const tensor_keys[] = {"labels", "logits",  "predictions",
                                          "losses", "weights", "mask"};
static const char *const config_keys[] = {"loss", "params", "reduction", "dtype", "outputs"};

/* A monitor keeps sums for its whole retention: one infinity would be in every figure. */
static const char no_non_finite[] =
    "a monitor keeps its sums for its whole retention, where one NaN or infinity would be in "
    "every figure: non-finite inputs are refused (as by /v1/loss without allow_non_finite)";

static int check_keys(struct mls_mcall *c, json_t *root)
{
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        if (!strcmp(key, "allow_non_finite"))
            return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, key, "%s", no_non_finite) - 1;
        int known = !strcmp(key, "time") || !strcmp(key, "slice") || !strcmp(key, "id");
        for (size_t i = 0; !known && i < sizeof(tensor_keys) / sizeof(tensor_keys[0]); i++)
            known = !strcmp(key, tensor_keys[i]);
        if (known)
            continue;
        for (size_t i = 0; i < sizeof(config_keys) / sizeof(config_keys[0]); i++)
            if (!strcmp(key, config_keys[i]))
                return mls_mhttp_error(
                           c, MLS_ERR_INVALID_OBSERVATION, key,
                           "%s comes from the monitor's config, not from an observation "
                           "(PUT /v1/monitors/%s to change it)",
                           key, c->name) -
                       1;
        return mls_mhttp_error(
                   c, MLS_ERR_INVALID_OBSERVATION, key,
                   "unknown field \"%.60s\": an observation has the tensors of /v1/loss "
                   "(labels, logits or predictions or losses, weights or mask) and "
                   "time, slice, id",
                   key) -
               1;
    }
    return 0;
}

static const struct mls_meta_names v1_names = {"time", "slice", "id"};
static const struct mls_meta_names v2_names = {"parameters.monitor_time",
                                               "parameters.monitor_slice", "parameters.monitor_id"};

/* time, slice and id into the op (t, slice, id: NULL when absent); -1 when answered
 * (refused). */
int mls_mhttp_meta(struct mls_mcall *c, struct mls_monitor *m, const json_t *t, const json_t *slice,
                   const json_t *id, const struct mls_meta_names *names, struct mls_op *op,
                   double *time, double now)
{
    const struct mls_mconfig *cfg = &m->cfg;
    double when = now;
    if (t && !json_is_null(t)) {
        if (mls_time_parse(t, &when))
            return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, names->time,
                                   "time is the event's time: Unix seconds (a number) or an RFC "
                                   "3339 string such as \"2026-12-01T09:30:00Z\"") -
                   1;
        if (when > now + MLS_MAX_FUTURE)
            return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, names->time,
                                   "time %.3f is %.0f s in the future; at most %d s ahead of the "
                                   "server's clock is accepted",
                                   when, when - now, MLS_MAX_FUTURE) -
                   1;
        if (when < now - (double)cfg->retention)
            return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, names->time,
                                   "time %.3f is older than the monitor's retention (%lld s)", when,
                                   (long long)cfg->retention) -
                   1;
    }
    *time = when;
    mls_bucket_of(when, (int64_t)now, c->srv->monitors.limits.rollup_after, &op->start, &op->width);
    op->t = (int64_t)now;
    /* Retention drops whole buckets: an event inside it whose (hour) bucket starts before it
     * would be dropped at the next upkeep, after its 200. */
    if (op->start < (int64_t)now - cfg->retention)
        return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, names->time,
                               "time %.3f falls in the bucket of %lld s starting at %lld, which is "
                               "older than the monitor's retention (%lld s): it would be dropped",
                               when, (long long)op->width, (long long)op->start,
                               (long long)cfg->retention) -
               1;

    if (slice && !json_is_null(slice)) {
        if (!json_is_object(slice))
            return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, names->slice,
                                   "slice is an object of slice keys to values") -
                   1;
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)slice, key, val)
        {
            char field[96];
            snprintf(field, sizeof(field), "%s.%.60s", names->slice, key);
            int k = 0;
            while (k < cfg->num_slice_keys && strcmp(cfg->slice_keys[k], key))
                k++;
            if (k == cfg->num_slice_keys)
                return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, field,
                                       "\"%.60s\" is not a slice key of monitor %s (its config "
                                       "lists them in \"slices\")",
                                       key, m->name) -
                       1;
            if (json_is_null(val))
                continue;
            if (!mls_mhttp_string(val, MLS_SLICE_VALUE_MAX))
                return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, field,
                                       "a slice value is a string of 1 to %d bytes",
                                       MLS_SLICE_VALUE_MAX) -
                       1;
            if (!(op->values[k] = strdup(json_string_value(val))))
                return mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory") - 1;
        }
    }
    if (!(op->combo_key = mls_combo_key(op->values, cfg->num_slice_keys)))
        return mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory") - 1;

    if (id && !json_is_null(id)) {
        if (!mls_mhttp_string(id, MLS_ID_MAX))
            return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, names->id,
                                   "id is the observation's idempotency key, a string of 1 to %d "
                                   "bytes",
                                   MLS_ID_MAX) -
                   1;
        snprintf(op->id, sizeof(op->id), "%s", json_string_value(id));
    }
    return 0;
}

static int sums_finite(const double *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return 0;
    return 1;
}

/* A decoded request evaluated with the monitor's config, its sums into the op; `extra`: outputs
 * beyond the sums; `keep`: receives the result (else it is freed). -1 when answered. */
static int observe_run(struct mls_mcall *c, struct mls_monitor *m, struct ml_request *req,
                       unsigned extra, struct observe_op *o, struct ml_result *keep)
{
    const struct mls_mconfig *cfg = &m->cfg;
    req->outputs = extra | ML_OUT_LOSS | ML_OUT_SUMS | (cfg->num_classes ? ML_OUT_CLASS_SUMS : 0);
    if (c->exec) {
        req->max_elements = c->exec->max_elements;
        req->parallel_for = c->exec->parallel_for;
        req->parallel_ctx = c->exec->parallel_ctx;
    }
    struct ml_result res;
    struct mlp_error err;
    memset(&err, 0, sizeof(err));
    int rc = ml_eval(req, &res, &err.e);
    if (rc)
        return mls_mhttp_status(c, rc, &err) - 1;
    const char *input = req->logits ? "logits" : req->predictions ? "predictions" : "losses";
    mls_metrics_elements(&c->srv->metrics, res.loss_name, (long long)res.sums.elements);
    /* Finite inputs can still overflow a sum (weights of 1e308): refused as well. */
    int finite = sums_finite((const double *)&res.sums, sizeof(res.sums) / sizeof(double));
    for (int64_t i = 0; finite && res.class_sums && i < res.num_classes; i++)
        finite = sums_finite((const double *)&res.class_sums[i],
                             sizeof(struct ml_sums) / sizeof(double));
    if (!finite) {
        ml_result_free(&res);
        return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, req->weights ? "weights" : input,
                               "the observation's sums overflow (a loss or weight too large): %s",
                               no_non_finite) -
               1;
    }
    if (cfg->num_classes && res.num_classes != cfg->num_classes) {
        ml_result_free(&res);
        return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, input,
                               "the last axis of %s has %lld classes; monitor %s has %lld", input,
                               (long long)res.num_classes, m->name, (long long)cfg->num_classes) -
               1;
    }
    o->loss = res.loss;
    o->sums = res.sums;
    o->op.total.s = res.sums;
    o->op.total.observations = 1;
    if (cfg->num_classes) {
        /* Every class slot: an observation's late part (late labels) is zeros. */
        o->op.classes = calloc((size_t)mls_class_slots(cfg), sizeof(*o->op.classes));
        if (!o->op.classes) {
            ml_result_free(&res);
            return mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory") - 1;
        }
        for (int64_t i = 0; i < cfg->num_classes; i++) {
            const struct ml_sums *k = &res.class_sums[i];
            o->op.classes[i] = (struct mls_class_sums){
                k->weighted_sum, k->denominator, k->sum_weights, k->num_nonzero_weights, k->sum_sq};
        }
    }
    if (keep)
        *keep = res;
    else
        ml_result_free(&res);
    return 0;
}

/* /v1: the observation's tensors, with the monitor's config, evaluated into the op. */
static int observe_eval(struct mls_mcall *c, struct mls_monitor *m, json_t *root,
                        struct observe_op *o)
{
    const struct mls_mconfig *cfg = &m->cfg;
    json_object_del(root, "time");
    json_object_del(root, "slice");
    json_object_del(root, "id");
    if (json_object_set_new(root, "loss", json_string(cfg->loss)) ||
        json_object_set_new(root, "reduction", json_string(cfg->reduction)) ||
        json_object_set_new(root, "dtype", json_string(cfg->f64 ? "float64" : "float32")) ||
        (cfg->params && json_object_set(root, "params", cfg->params)))
        return mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory") - 1;
    struct mlp_request req;
    struct mlp_error err;
    int rc = mlp_request_decode(root, &req, &err);
    if (rc)
        return mls_mhttp_status(c, rc, &err) - 1;
    rc = observe_run(c, m, &req.req, 0, o, NULL);
    mlp_request_free(&req);
    return rc;
}

/* A per-sample loss with classes counts predictions and their labels only (late.h): its
 * classes are the labels', which an observation's sums cannot split. 1 when observable. */
static int observable(struct mls_mcall *c, const struct mls_monitor *m, const char *field)
{
    if (!m->cfg.late || m->cfg.late == MLS_LATE_ELEMENTWISE)
        return 1;
    mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, field,
                    "monitor %s counts predictions and late labels (%s with classes): POST "
                    "/v1/monitors/%s/predictions, then /labels",
                    m->name, m->cfg.loss, m->name);
    return 0;
}

static int do_observe(struct mls_mcall *c)
{
    struct mls_server *s = c->srv;
    struct mls_monitor *m = mls_registry_get(&s->monitors, c->name);
    if (!m)
        return mls_mhttp_error(c, MLS_ERR_MONITOR_NOT_FOUND, "name",
                               "no monitor named %.130s (PUT /v1/monitors/%.130s creates one)",
                               c->name, c->name);
    if (!observable(c, m, "name")) {
        mls_monitor_unref(m);
        return 0;
    }
    json_t *root = NULL;
    struct mlp_error err;
    int rc = mlp_parse(c->body ? c->body : "", c->len, &root, &err);
    if (rc) {
        mls_monitor_unref(m);
        return mls_mhttp_status(c, rc, &err);
    }
    struct observe_op *o = calloc(1, sizeof(*o));
    if (!o) {
        json_decref(root);
        mls_monitor_unref(m);
        return mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory");
    }
    o->op.monitor = m; /* the op's reference from here */
    if (!json_is_object(root)) {
        mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "",
                        "an observation is a JSON object with the tensors of /v1/loss");
    } else if (!check_keys(c, root) &&
               !mls_mhttp_meta(c, m, json_object_get(root, "time"), json_object_get(root, "slice"),
                               json_object_get(root, "id"), &v1_names, &o->op, &o->time,
                               mls_now()) &&
               !observe_eval(c, m, root, o)) {
        /* (the answer names the monitor) */
        snprintf(o->op.name, sizeof(o->op.name), "%s", m->name);
        o->call = c;
        observe_write(o);
        if (!o->out.failed) {
            json_decref(root);
            return mls_mhttp_hand_over(c, &o->op, MLS_OP_OBSERVE, m->name, observe_done, o);
        }
        mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory writing the answer");
    }
    json_decref(root);
    mls_op_clear(&o->op);
    free(o);
    return 0;
}

/* v2: an inference request with parameters.monitor feeds that monitor. */
static int v2_observe(struct mls_mcall *c, struct mls_monitor *m, const char *model,
                      struct mlp_v2_request *v2, struct observe_op *o)
{
    const struct mls_mconfig *cfg = &m->cfg;
    if (ml_loss_find(model) != ml_loss_find(cfg->loss))
        return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "parameters.monitor",
                               "monitor %s evaluates %s, not %.100s: infer on "
                               "/v2/models/%s/infer",
                               m->name, cfg->loss, model, cfg->loss) -
               1;
    if (v2->base.req.allow_non_finite)
        return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "parameters.allow_non_finite", "%s",
                               no_non_finite) -
               1;
    if (v2->base.req.reduction || v2->dtype_given || v2->base.num_params)
        return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "parameters",
                               "the reduction, dtype and loss parameters come from monitor %s's "
                               "config; a request that feeds it sends none",
                               m->name) -
               1;
    json_t *slice = NULL;
    const json_t *sv = v2->monitor_slice;
    if (json_is_string(sv)) { /* Triton's parameters are strings, numbers and booleans */
        slice = json_loads(json_string_value(sv), 0, NULL);
        if (!json_is_object(slice)) {
            json_decref(slice);
            return mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "parameters.monitor_slice",
                                   "monitor_slice is a JSON object of slice keys to values, or "
                                   "its text") -
                   1;
        }
        sv = slice;
    }
    int rc = mls_mhttp_meta(c, m, v2->monitor_time, sv, v2->monitor_id, &v2_names, &o->op, &o->time,
                            mls_now());
    json_decref(slice);
    if (rc)
        return rc;
    v2->base.req.reduction = cfg->reduction;
    v2->base.req.dtype = cfg->f64 ? ML_FLOAT64 : ML_FLOAT32;
    struct mlp_error err;
    if (cfg->params && (rc = mlp_params_decode(cfg->params, &v2->base, &err)))
        return mls_mhttp_status(c, rc, &err) - 1;
    unsigned extra = 0;
    for (int i = 0; i < v2->num_outputs; i++)
        extra |= v2->output_bits[i];
    struct ml_result res;
    if ((rc = observe_run(c, m, &v2->base.req, extra, o, &res)))
        return rc;
    struct mlp_buf members = {0};
    mlp_buf_puts(&members, ",\"monitor\":");
    mlp_buf_string(&members, m->name);
    mlp_buf_puts(&members, ",\"monitor_");
    mlp_buf_puts(&members, dup_false);
    v2->extra_parameters = members.data;
    mlp_v2_response_write(&o->out, &o->header_len, model, &res, v2);
    v2->extra_parameters = NULL;
    ml_result_free(&res);
    int failed = members.failed || o->out.failed;
    free(members.data);
    if (failed)
        return mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory") - 1;
    o->v2 = 1;
    return 0;
}

int mls_monitor_v2(struct mls_mcall *c, const char *model, struct mlp_v2_request *v2)
{
    struct mls_server *s = c->srv;
    int rc = 0;
    const char *name = json_is_string(v2->monitor) ? json_string_value(v2->monitor) : "";
    struct mls_monitor *m = *name ? mls_registry_get(&s->monitors, name) : NULL;
    if (*name && !m && !mls_writer_sync(&s->writer)) /* (made on another replica?) */
        m = mls_registry_get(&s->monitors, name);
    if (!json_is_string(v2->monitor)) {
        mls_mhttp_error(c, MLS_ERR_INVALID_OBSERVATION, "parameters.monitor",
                        "parameters.monitor is the name of a monitor (a string)");
    } else if (!m) {
        mls_mhttp_error(c, MLS_ERR_MONITOR_NOT_FOUND, "parameters.monitor",
                        "no monitor named %.130s (PUT /v1/monitors/{name} creates one)", name);
    } else if (!observable(c, m, "parameters.monitor")) {
        mls_monitor_unref(m);
    } else {
        struct observe_op *o = calloc(1, sizeof(*o));
        if (!o) {
            mls_monitor_unref(m);
            mls_mhttp_error(c, MLS_ERR_OUT_OF_MEMORY, "", "out of memory");
        } else {
            o->op.monitor = m;
            if (!v2_observe(c, m, model, v2, o)) {
                o->call = c;
                rc = mls_mhttp_hand_over(c, &o->op, MLS_OP_OBSERVE, m->name, observe_done, o);
            } else {
                mls_op_clear(&o->op);
                free(o->out.data);
                free(o);
            }
        }
    }
    mlp_request_free(&v2->base);
    if (!rc) {
        if (c->status == 422)
            c->status = 400; /* v2 answers a client's mistake 400, as Triton does */
        *c->out_header_len = c->out->len;
    }
    return rc;
}

/* ---- Reads -------------------------------------------------------------------------------- */

static int do_list(struct mls_mcall *c)
{
    struct mls_registry *g = &c->srv->monitors;
    mlp_buf_puts(c->out, "{\"monitors\":[");
    pthread_rwlock_rdlock(&g->lock);
    for (size_t i = 0; i < g->count; i++) {
        if (i)
            mlp_buf_puts(c->out, ",");
        mls_monitor_write_config(g->items[i], c->out);
    }
    pthread_rwlock_unlock(&g->lock);
    mlp_buf_puts(c->out, "]}");
    c->status = 200;
    return 0;
}

static int do_get(struct mls_mcall *c)
{
    struct mls_monitor *m = mls_registry_get(&c->srv->monitors, c->name);
    if (!m)
        return mls_mhttp_error(c, MLS_ERR_MONITOR_NOT_FOUND, "name", "no monitor named %.130s",
                               c->name);
    mls_monitor_write_figures(m, (int64_t)floor(mls_now()), c->out);
    mls_monitor_unref(m);
    c->status = 200;
    return 0;
}

/* A time argument: Unix seconds or RFC 3339. */
static int query_time(const char *v, int64_t *out)
{
    /* Unix seconds as digits with an optional fraction (no sign, space, hex or exponent,
     * which strtod would take), else RFC 3339. */
    size_t digits = strspn(v, "0123456789");
    int plain =
        digits > 0 && (!v[digits] || (v[digits] == '.' && v[digits + 1] &&
                                      !v[digits + 1 + strspn(v + digits + 1, "0123456789")]));
    double t;
    if (plain)
        t = strtod(v, NULL);
    else if (mls_time_parse_text(v, &t))
        return -1;
    if (!(t >= 0 && t < 253402300800.0))
        return -1;
    *out = (int64_t)floor(t);
    return 0;
}

static int do_series(struct mls_mcall *c)
{
    const struct mls_query *q = c->query;
    struct mls_monitor *m = mls_registry_get(&c->srv->monitors, c->name);
    if (!m)
        return mls_mhttp_error(c, MLS_ERR_MONITOR_NOT_FOUND, "name", "no monitor named %.130s",
                               c->name);
    const struct mls_mconfig *cfg = &m->cfg;
    struct mls_series_query sq;
    memset(&sq, 0, sizeof(sq));
    sq.cls = -1;
    sq.step = q->step[0] ? mls_duration_parse(q->step) : MLS_BUCKET;
    int64_t now = (int64_t)floor(mls_now());
    sq.to = now + MLS_BUCKET;
    int bad = 0;
    if (sq.step < MLS_BUCKET || sq.step % MLS_BUCKET)
        bad = mls_mhttp_error(c, MLS_ERR_INVALID_QUERY, "step",
                              "step is a whole number of minutes (\"1m\", \"15m\", \"1h\")") +
              1;
    else if (q->to[0] && query_time(q->to, &sq.to))
        bad = mls_mhttp_error(c, MLS_ERR_INVALID_QUERY, "to",
                              "to is Unix seconds or an RFC 3339 time, from 1970 to 9999") +
              1;
    sq.from = sq.to > 86400 ? sq.to - 86400 : 0; /* (a day before to, but not before 1970) */
    if (!bad && !q->from[0] && sq.to <= 0)
        bad = mls_mhttp_error(c, MLS_ERR_INVALID_QUERY, "to",
                              "to must be after 1970-01-01T00:00:00Z (from is before it)") +
              1;
    if (!bad && q->from[0] && query_time(q->from, &sq.from))
        bad = mls_mhttp_error(c, MLS_ERR_INVALID_QUERY, "from",
                              "from is Unix seconds or an RFC 3339 time, from 1970 to 9999") +
              1;
    if (!bad && sq.from >= sq.to)
        bad = mls_mhttp_error(c, MLS_ERR_INVALID_QUERY, "from", "from must be before to") + 1;
    if (!bad && (sq.to - sq.from) / sq.step > 10000)
        bad = mls_mhttp_error(c, MLS_ERR_INVALID_QUERY, "step",
                              "the range holds more than 10000 steps: choose a longer step or a "
                              "shorter range") +
              1;
    for (int i = 0; !bad && i < q->num_slices; i++) {
        const char *eq = strchr(q->slices[i], '=');
        int k = 0;
        size_t klen = eq ? (size_t)(eq - q->slices[i]) : 0;
        while (eq && k < cfg->num_slice_keys &&
               !(strlen(cfg->slice_keys[k]) == klen &&
                 !strncmp(cfg->slice_keys[k], q->slices[i], klen)))
            k++;
        if (!eq || k == cfg->num_slice_keys) {
            bad = mls_mhttp_error(c, MLS_ERR_INVALID_QUERY, "slice",
                                  "slice is KEY=VALUE with a slice key of the monitor, not "
                                  "\"%.100s\"",
                                  q->slices[i]) +
                  1;
            break;
        }
        sq.filter_key[sq.num_filters] = k;
        sq.filter_value[sq.num_filters++] = eq + 1;
    }
    if (!bad && q->cls[0]) {
        if (!cfg->num_classes) {
            bad = mls_mhttp_error(c, MLS_ERR_INVALID_QUERY, "class",
                                  "monitor %s has no classes (its config gives neither classes "
                                  "nor num_classes)",
                                  m->name) +
                  1;
        } else {
            for (int64_t i = 0; cfg->class_names && i < cfg->num_classes; i++)
                if (!strcmp(cfg->class_names[i], q->cls))
                    sq.cls = i;
            char *end;
            long long v = strtoll(q->cls, &end, 10);
            if (sq.cls < 0 && !*end && end != q->cls && v >= 0 && v < cfg->num_classes)
                sq.cls = v;
            if (sq.cls < 0)
                bad = mls_mhttp_error(c, MLS_ERR_INVALID_QUERY, "class",
                                      "class \"%.100s\" is neither a class name nor an index below "
                                      "%lld",
                                      q->cls, (long long)cfg->num_classes) +
                      1;
        }
    }
    if (!bad) {
        mls_monitor_write_series(m, &sq, c->out);
        c->status = 200;
    }
    mls_monitor_unref(m);
    return 0;
}

/* Replicas sharing a store: a read answers with what every replica committed before it
 * arrived, and a change to a monitor this replica has not seen yet (made on another) looks
 * again once caught up. (A create, replace or delete: the writer catches up itself.) 0, or -1
 * answered 503. */
static int catch_up(struct mls_mcall *c)
{
    int get = !strcmp(c->method, "GET") || !strcmp(c->method, "HEAD");
    if (!get) {
        if (!strcmp(c->method, "PUT") || !strcmp(c->method, "DELETE") || !c->name[0])
            return 0;
        struct mls_monitor *m = mls_registry_get(&c->srv->monitors, c->name);
        mls_monitor_unref(m);
        if (m)
            return 0;
    }
    if (!mls_writer_sync(&c->srv->writer))
        return 0;
    mls_mhttp_error(c, MLS_ERR_STATE_UNAVAILABLE, "",
                    "the monitors' shared state (PostgreSQL) cannot be reached now, so this "
                    "replica cannot tell the other replicas' figures; retry later (the server "
                    "log says why)");
    return -1;
}

int mls_monitor_route(struct mls_mcall *c)
{
    if (catch_up(c))
        return 0;
    switch (c->route) {
    case MLS_ROUTE_MONITORS:
        return do_list(c);
    case MLS_ROUTE_MONITOR_OBSERVE:
        return do_observe(c);
    case MLS_ROUTE_MONITOR_SERIES:
        return do_series(c);
    case MLS_ROUTE_MONITOR_PREDICTIONS:
        return mls_late_predictions(c);
    case MLS_ROUTE_MONITOR_LABELS:
        return mls_late_labels(c);
    default:
        if (!strcmp(c->method, "PUT"))
            return do_put(c);
        if (!strcmp(c->method, "DELETE"))
            return do_delete(c);
        return do_get(c);
    }
}
