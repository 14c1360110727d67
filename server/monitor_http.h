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

/* The query arguments of a monitor route, copied on the HTTP thread (collect them with
 * mls_monitor_query_arg for each argument). */
#define MLS_QUERY_MAX 8
struct mls_query {
    char force[8];
    char step[32], from[48], to[48], cls[160];
    int num_slices;
    char slices[MLS_QUERY_MAX][300];
    char bad[64]; /* the first argument that is unknown, repeated or too long; "" when none */
};

/* libmicrohttpd's MHD_KeyValueIterator over GET arguments, cls a struct mls_query. */
enum MHD_Result mls_monitor_query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                      const char *value);

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
    size_t *out_header_len; /* v2: the JSON header's length in out */
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
/* Whether the request carries a body to read. */
int mls_monitor_takes_body(enum mls_route route, const char *method);

#endif /* MLS_MONITOR_HTTP_H */
