/*
 * monitor_http.h -- the monitor routes (/v1/monitors...), answered on a worker thread.
 *
 * http.c routes a request here with its method, the name from the path and the body; the
 * answer is written into `out` with `status`. Reads answer at once; changes (create,
 * replace, delete, observe) go through the writer thread and are answered from it, once
 * durable, by calling finish().
 */
#ifndef MLS_MONITOR_HTTP_H
#define MLS_MONITOR_HTTP_H

#include <microhttpd.h>

#include "metrics.h"
#include "mlp.h"

struct mls_server;

/* The query arguments of a request, copied on the HTTP thread: set route and method, then
 * collect them with mls_query_arg for each argument (refused: bad[0] set). A route takes only
 * its own (the OpenAPI document's parameters): PUT /v1/monitors/{name} force; GET .../series
 * step, from, to, slice (repeated) and class; every other route none. Any other argument is
 * refused (400 invalid_query naming it), never ignored: an argument that seems to ask for
 * something the route does not do would otherwise answer a number that is not the one asked
 * for. (The static files' route reads no query at all: http.c.) */
#define MLS_QUERY_MAX 8
struct mls_query {
    enum mls_route route;
    const char *method; /* HEAD reads as GET */
    char force[8];
    char step[32], from[48], to[48], cls[160];
    int num_slices;
    char slices[MLS_QUERY_MAX][300];
    char bad[64]; /* the first argument refused ("(no name)" for "=x"), or "" */
    char why[48]; /* why: "not one it takes", "repeated", "empty", "too long (...)" */
};

/* libmicrohttpd's MHD_KeyValueIterator over GET arguments, cls a struct mls_query. */
enum MHD_Result mls_query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                              const char *value);

/* The arguments route and method take, for a message, into buf: "force", or "none". */
void mls_query_takes(enum mls_route route, const char *method, char *buf, size_t size);

struct mls_mcall {
    struct mls_server *srv;
    enum mls_route route;
    const char *method;
    const char *name; /* from the path; "" for /v1/monitors */
    const char *body;
    size_t len;
    const struct mls_query *query;
    const struct mlp_exec *exec;
    /* The answer. */
    unsigned status;
    struct mlp_buf *out;
    size_t *out_header_len;              /* v2: the JSON header's length in out */
    void (*finish)(struct mls_mcall *c); /* the writer's answer is ready (writer thread) */
    /* A change for the writer thread, set when mls_monitor_route() returns 1: the caller
     * submits it (mls_writer_submit) as its last touch of the request, since the answer may
     * come, and the request be freed, at once. */
    struct mls_op *submit;
};

/* Answers c. Returns 0 when the answer is in c->out; 1 when c->submit is to be submitted,
 * after which finish() will be called. */
int mls_monitor_route(struct mls_mcall *c);

struct mlp_v2_request;
/* A v2 inference request whose parameters name a monitor: evaluated with the monitor's config
 * and observed. Takes the request (released here). Returns as mls_monitor_route(). */
int mls_monitor_v2(struct mls_mcall *c, const char *model, struct mlp_v2_request *v2);

/* The routes' paths beneath /v1/monitors: the name in name (size bytes), the route. */
enum mls_route mls_monitor_route_of(const char *url, char *name, size_t size);

/* The methods a monitor route allows ("GET, HEAD, PUT, DELETE"); whether method is one. */
const char *mls_monitor_methods(enum mls_route route);
int mls_monitor_method_ok(enum mls_route route, const char *method);
/* The value of ?force=: 1 (true, 1), 0 (false, 0), -1 anything else. */
int mls_monitor_force(const char *v);
/* Whether a route adds to buckets through the writer (observe, predictions, labels): the
 * writer expects it (mls_writer_expect) while it is computed. */
int mls_monitor_adds(enum mls_route route);
/* Whether the request carries a body to read. */
int mls_monitor_takes_body(enum mls_route route, const char *method);

/* ---- Shared by the monitor routes (monitor_http.c, late_http.c) ---------------------------- */

#include "errors.h"

struct mls_op;
struct mls_monitor;
enum mls_op_kind;

/* Answers an error object (status from the code); returns 0. */
int mls_mhttp_error(struct mls_mcall *c, enum mls_error e, const char *field, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* A library or protocol failure, as /v1/loss answers it; returns 0. */
int mls_mhttp_status(struct mls_mcall *c, int rc, const struct mlp_error *err);
/* The answer to an op the writer refused; field: what the request named. */
void mls_mhttp_refusal(struct mls_mcall *c, const struct mls_op *op, const char *field);
/* Makes op the change the caller submits to the writer (mls_mcall.submit); returns 1. */
int mls_mhttp_hand_over(struct mls_mcall *c, struct mls_op *op, enum mls_op_kind kind,
                        const char *name, void (*done)(struct mls_op *, void *), void *self);
/* Whether v is a JSON string of 1..max bytes without NUL. */
int mls_mhttp_string(const json_t *v, size_t max);

/* How a request calls an event's time, slice and id (/v1 and v2 differ). */
struct mls_meta_names {
    const char *time, *slice, *id;
};
/* time, slice and id (each NULL when absent) checked against the monitor into op (start,
 * width, values, combo_key, id, t) and *time; -1 when answered (refused). */
int mls_mhttp_meta(struct mls_mcall *c, struct mls_monitor *m, const json_t *t, const json_t *slice,
                   const json_t *id, const struct mls_meta_names *names, struct mls_op *op,
                   double *time, double now);

/* POST /v1/monitors/{name}/predictions and /labels (late_http.c); return as
 * mls_monitor_route(). */
int mls_late_predictions(struct mls_mcall *c);
int mls_late_labels(struct mls_mcall *c);

#endif /* MLS_MONITOR_HTTP_H */
