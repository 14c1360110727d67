/*
 * http.c -- the HTTP side of maskloss-server: routing, limits, and the hand-off of compute
 * requests to the worker pool through libmicrohttpd's suspend/resume.
 *
 * Every handler call runs on one of libmicrohttpd's epoll threads (--http-threads; each owns
 * the connections it accepted, so one request's calls all run on the same thread, and what
 * they share across connections -- quotas, tokens, the connection table, metrics -- is behind
 * mutexes or atomics). The order of calls for one request, and the rules this file keeps
 * (measured pitfalls of libmicrohttpd 0.9.75 + libuv):
 *   1. headers: route and check limits. Reply here only to refuse a body by its
 *      Content-Length (413, which closes the connection); any other reply waits for the final
 *      call, or keep-alive is lost.
 *   2. body chunks: copied up to --max-body-bytes, then dropped (413 at the end).
 *   3. final call: cheap routes answer at once. Compute routes return once without an answer
 *      (see submit()), then, called again, reserve a queue slot (503 when none), suspend the
 *      connection, and only then publish the job.
 *   4. the worker computes, marks the job done and resumes the connection as its last touch;
 *      the final call runs again and queues the stored answer.
 * NOTIFY_COMPLETED frees the request, counts it and writes the access log line.
 */
/* madvise's MADV_HUGEPAGE (Linux) is declared for _DEFAULT_SOURCE only. */
#define _DEFAULT_SOURCE 1
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>

#include "errors.h"
#include "mlp_v2.h"
#include "monitor_http.h"
#include "origin.h"
#include "server.h"
#include "ui.h"

/* What a preflight may ask to send: the headers of every route's requests. */
#define CORS_ALLOW_HEADERS "Authorization, Content-Type, Inference-Header-Content-Length"
/* The answer's headers a page may read beyond the CORS-safelisted ones. */
#define CORS_EXPOSE_HEADERS "Retry-After, WWW-Authenticate, Inference-Header-Content-Length, Allow"
/* Seconds a browser may keep a preflight's answer. */
#define CORS_MAX_AGE "600"
/* The status page's Content-Security-Policy: its own scripts, styles and images, calls to this
 * server only; no inline code, no forms, never in a frame. */
#define UI_CSP                                                                                     \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

enum req_state { REQ_RECEIVING, REQ_QUEUED, REQ_DONE };

struct request {
    struct mls_pool_item item; /* first: the pool links jobs through it */
    struct mls_server *srv;
    struct MHD_Connection *conn;
    enum mls_route route;
    uint64_t t_start; /* uv_hrtime() at the headers */
    int head;         /* a HEAD request */
    char method[16];
    char path[192];
    char remote[64];

    /* Who sent it (--auth-file): the decision, the token's name (never the token). */
    enum mls_decision decision;
    unsigned need;  /* the scope the route and method need */
    int token_sent; /* an Authorization header came */
    char token[MLP_TOKEN_NAME_MAX + 1];
    size_t auth_counter;           /* its counter of decisions (mls_auth_count) */
    struct mls_quota_client *held; /* its place in its client's share of the queue */
    unsigned retry_after;          /* seconds, for a 429 */

    /* --cors-origin: the request's Origin when allowed, and whether it is a preflight. */
    char origin[MLS_ORIGIN_MAX + 1];
    int preflight;

    /* The status page's routes: the file asked for. */
    const struct mls_ui_asset *asset;

    /* An answer decided from the headers (404, 405, 415), sent by the final call. */
    unsigned early_status;
    enum mls_error early_err;
    const char *early_field;
    char early_message[256];

    char *body;
    size_t len, cap;
    json_t *root; /* /v1/loss: the body parsed on the HTTP thread, for the worker when it
                     was not answered there (answer_inline) */
    uint64_t bytes_in;
    uint64_t content_length; /* 0 when unknown */
    char model[160];         /* v2 model routes: the loss name; monitor routes: the monitor's */
    long long ihcl;          /* v2 infer: Inference-Header-Content-Length, -1 when absent */
    size_t pad;              /* body = body_base + pad, so that the binary data is aligned */
    char *body_base;
    int too_large;         /* the body crossed --max-body-bytes */
    int body_oom;          /* the body could not be stored */
    int timed_out;         /* the body took longer than --connection-timeout */
    int over_budget;       /* a chunked body outgrew the memory budget: why (BUDGET_*), else 0 */
    int final_seen;        /* the final call came once (submit()) */
    uint64_t budget;       /* bytes of the memory budget held until completion */
    uint64_t budget_held;  /* when refused: what the other requests held of the budget or share */
    struct mls_peer *peer; /* the client address whose share holds bytes of budget */
    struct mls_conn *cx;
    struct stream *stream; /* a large answer being sent: how far it got */

    struct mls_query query; /* monitor routes: the query arguments */
    struct mls_mcall mcall; /* monitor routes: the call the worker and the writer answer */
    int handed_off;         /* the writer thread answers (mcall.finish) */

    /* Written by the worker before the resume, read by the HTTP thread after it. */
    _Atomic int state;
    unsigned answer_status;
    struct mlp_buf out;
    size_t out_header_len; /* v2: the JSON part of out; less than out.len with binary data */
    const char *loss_name;
    size_t entries;
    uint64_t queue_ns;

    unsigned status; /* the status queued to the client; 0 while none */
    uint64_t bytes_out;
};

/* ---- Answers --------------------------------------------------------------------------- */

static int is_compute(enum mls_route route)
{
    return route == MLS_ROUTE_LOSS || route == MLS_ROUTE_BATCH || route == MLS_ROUTE_V2_INFER;
}

static int is_monitor(enum mls_route route)
{
    return route == MLS_ROUTE_MONITORS || route == MLS_ROUTE_MONITOR ||
           route == MLS_ROUTE_MONITOR_OBSERVE || route == MLS_ROUTE_MONITOR_SERIES ||
           route == MLS_ROUTE_MONITOR_PREDICTIONS || route == MLS_ROUTE_MONITOR_LABELS;
}

/* Whether the request's body is read (others are dropped). */
static int takes_body(const struct request *r)
{
    return is_compute(r->route) || mls_monitor_takes_body(r->route, r->method);
}

static const char *allowed_methods(enum mls_route route)
{
    if (is_monitor(route))
        return mls_monitor_methods(route);
    return is_compute(route) ? "POST" : "GET, HEAD";
}

static enum MHD_Result queue(struct request *r, unsigned status, struct MHD_Response *resp,
                             const char *content_type, size_t len)
{
    enum MHD_Result ret;
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (status == MHD_HTTP_TOO_MANY_REQUESTS) {
        char seconds[16];
        snprintf(seconds, sizeof(seconds), "%u", r->retry_after ? r->retry_after : 1u);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, seconds);
    }
    if (r->srv->cfg.cors_origins[0]) {
        /* Answers differ by Origin: caches in between must keep them apart. */
        MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, MHD_HTTP_HEADER_ORIGIN);
        if (r->origin[0]) {
            MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, r->origin);
            MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_EXPOSE_HEADERS,
                                    CORS_EXPOSE_HEADERS);
        }
        if (r->preflight) {
            MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_METHODS,
                                    allowed_methods(r->route));
            MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_HEADERS,
                                    CORS_ALLOW_HEADERS);
            MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_MAX_AGE, CORS_MAX_AGE);
        }
    }
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allowed_methods(r->route));
    if (r->route == MLS_ROUTE_UI) {
        /* The status page runs only its own files (no inline script or style), and reads only
         * this server. */
        MHD_add_response_header(resp, "Content-Security-Policy", UI_CSP);
        MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
        MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    }
    if (r->decision == MLS_DECISION_UNAUTHORIZED || r->decision == MLS_DECISION_FORBIDDEN) {
        /* RFC 6750 section 3: the challenge, and why the token was not enough. */
        char challenge[128];
        snprintf(challenge, sizeof(challenge), "Bearer realm=\"maskloss\"%s%s%s",
                 r->decision == MLS_DECISION_FORBIDDEN ? ", error=\"insufficient_scope\", scope=\""
                 : r->token_sent                       ? ", error=\"invalid_token\""
                                                       : "",
                 r->decision == MLS_DECISION_FORBIDDEN ? mlp_scope_name(r->need) : "",
                 r->decision == MLS_DECISION_FORBIDDEN ? "\"" : "");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, challenge);
    }
    /* While draining, end keep-alive so that clients reconnect elsewhere; the close lingers,
     * or requests a client pipelined behind this one would make the kernel reset the
     * connection and destroy the answers it has not read yet. */
    if (atomic_load_explicit(&r->srv->state, memory_order_relaxed) == MLS_DRAINING) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
        mls_conn_set_linger(r->cx);
    }
    r->status = status;
    r->bytes_out = r->head ? 0 : len; /* libmicrohttpd sends no body for HEAD */
    ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* Answers larger than this are handed to libmicrohttpd a block at a time, so that a client
 * that leaves mid-answer is logged with the bytes that reached its socket, not the whole. */
#define STREAM_BLOCK 65536

struct stream {
    char *data;
    size_t len;
    uint64_t sent; /* bytes written to the socket before the block asked for last */
};

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream *st = cls;
    st->sent = pos; /* libmicrohttpd asks for a block once the previous one is sent */
    if (pos >= st->len)
        return MHD_CONTENT_READER_END_OF_STREAM;
    size_t n = st->len - (size_t)pos;
    if (n > max)
        n = max;
    memcpy(buf, st->data + pos, n);
    return (ssize_t)n;
}

static void stream_free(void *cls)
{
    struct stream *st = cls;
    free(st->data);
    free(st);
}

/* A response taking b's text (NULL with b's text freed when out of memory). */
static struct MHD_Response *response_of(struct mlp_buf *b, struct stream **st)
{
    struct MHD_Response *resp = NULL;
    *st = NULL;
    if (b->len > STREAM_BLOCK && (*st = malloc(sizeof(**st)))) {
        **st = (struct stream){b->data, b->len, 0};
        resp =
            MHD_create_response_from_callback(b->len, STREAM_BLOCK, stream_read, *st, stream_free);
        if (!resp) {
            free(*st);
            *st = NULL;
        }
    }
    if (!resp)
        resp = MHD_create_response_from_buffer(b->len, b->data, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        free(b->data);
    *b = (struct mlp_buf){0}; /* the response owns the text now */
    return resp;
}

/* The answer when memory ran out writing one: static, as nothing can be allocated (its code
 * is mls_error_name(MLS_ERR_OUT_OF_MEMORY); the fuzz target checks every code it sees). */
static const char oom_body[] =
    "{\"error\":\"the server ran out of memory writing the answer\",\"code\":\"out_of_memory\","
    "\"field\":\"\"}";

/* Queues b (taking its buffer) as a JSON answer. */
static enum MHD_Result send_json(struct request *r, unsigned status, struct mlp_buf *b)
{
    struct MHD_Response *resp;
    size_t len = b->len;
    if (b->failed) {
        free(b->data);
        *b = (struct mlp_buf){0};
        resp = MHD_create_response_from_buffer(sizeof(oom_body) - 1, (void *)oom_body,
                                               MHD_RESPMEM_PERSISTENT);
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        len = sizeof(oom_body) - 1;
    } else {
        struct stream *st;
        resp = response_of(b, &st);
        if (!resp)
            return MHD_NO;
        enum MHD_Result ret;
        if (r->out_header_len && r->out_header_len < len) {
            /* v2 with binary outputs: the JSON header, then the bytes. */
            char ihcl[32];
            snprintf(ihcl, sizeof(ihcl), "%zu", r->out_header_len);
            MHD_add_response_header(resp, "Inference-Header-Content-Length", ihcl);
            ret = queue(r, status, resp, "application/octet-stream", len);
        } else {
            ret = queue(r, status, resp, "application/json", len);
        }
        if (ret == MHD_YES)
            r->stream = st; /* lives with the response, past the completion callback */
        return ret;
    }
    if (!resp)
        return MHD_NO;
    return queue(r, status, resp, "application/json", len);
}

static enum MHD_Result send_static(struct request *r, unsigned status, const char *text, size_t len,
                                   const char *content_type)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    return queue(r, status, resp, content_type, len);
}

static enum MHD_Result send_error(struct request *r, enum mls_error e, const char *field,
                                  const char *msg)
{
    struct mlp_buf b = {0};
    mls_error_write(&b, mls_error_name(e), field, msg);
    return send_json(r, mls_error_status(e), &b);
}

/* The HTTP status of a v2 failure: 400 like Triton and KServe, but 404 for an unknown model
 * and the limits' own codes. */
static unsigned v2_status_of(int rc)
{
    switch (rc) {
    case 0:
        return MHD_HTTP_OK;
    case ML_EUNKNOWN_LOSS:
        return MHD_HTTP_NOT_FOUND;
    case ML_ETOOLARGE:
        return MHD_HTTP_CONTENT_TOO_LARGE;
    case ML_ENOMEM:
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    default:
        return MHD_HTTP_BAD_REQUEST;
    }
}

/* The HTTP status of a protocol or library status. */
static unsigned http_status_of(int rc)
{
    switch (rc) {
    case 0:
        return MHD_HTTP_OK;
    case MLP_EMALFORMED:
        return MHD_HTTP_BAD_REQUEST;
    case ML_ETOOLARGE:
        return MHD_HTTP_CONTENT_TOO_LARGE;
    case ML_ENOMEM:
        return MHD_HTTP_SERVICE_UNAVAILABLE;
    default:
        return MHD_HTTP_UNPROCESSABLE_CONTENT; /* well-formed, but cannot be evaluated */
    }
}

/* ---- Worker side ----------------------------------------------------------------------- */

static void count_entry(void *cls, int status, const struct mlp_eval_info *info)
{
    struct mls_server *s = cls;
    (void)status;
    mls_metrics_elements(&s->metrics, info->loss_name, info->elements);
}

/* The writer thread's answer to a monitor change is ready: as a worker's would be. */
static void monitor_finish(struct mls_mcall *c)
{
    struct request *r = (struct request *)((char *)c - offsetof(struct request, mcall));
    r->answer_status = c->status;
    atomic_store_explicit(&r->state, REQ_DONE, memory_order_release);
    /* The last touch: from here the HTTP thread may answer and free r. */
    MHD_resume_connection(r->conn);
}

static struct mls_mcall *monitor_call(struct mls_server *s, struct request *r,
                                      const struct mlp_exec *exec)
{
    struct mls_mcall *c = &r->mcall;
    c->srv = s;
    c->route = r->route;
    c->method = r->method;
    c->name = r->model;
    c->body = r->body;
    c->len = r->len;
    c->query = &r->query;
    c->exec = exec;
    c->out = &r->out;
    c->out_header_len = &r->out_header_len;
    c->finish = monitor_finish;
    return c;
}

/* Drops an answer written by a trial on the HTTP thread: a worker writes the real one. */
static int not_inline(struct request *r)
{
    free(r->out.data);
    r->out = (struct mlp_buf){0};
    r->out_header_len = 0;
    return 1;
}

/* Where compute() runs: on a worker, or on the HTTP thread (answer_inline) either as a trial
 * (exec's element limit below the server's: a request over it goes on to a worker) or with the
 * server's own limit (its answer is the answer). */
enum where { ON_WORKER, INLINE_TRIAL, INLINE_FINAL };

/*
 * Decodes, evaluates and encodes r's answer into r->out and r->answer_status, as exec says:
 * 0. On the HTTP thread it returns 1 instead for a request that feeds a monitor (its hand-off
 * to the writer suspends the connection: a worker's job) or, in a trial, one over the trial's
 * limit: a worker is to answer it, with the document parsed here kept in r->root.
 */
static int compute(struct mls_server *s, struct request *r, const struct mlp_exec *exec,
                   enum where where)
{
    const int trial = where == INLINE_TRIAL;
    struct mlp_error err;
    json_t *root = r->root;
    memset(&err, 0, sizeof(err));
    err.e.index = -1;
    r->root = NULL;

    if (is_monitor(r->route)) {
        struct mls_mcall *c = monitor_call(s, r, exec);
        r->handed_off = mls_monitor_route(c);
        c->exec = NULL; /* (on this stack) */
        r->answer_status = c->status;
        return 0;
    }
    if (r->route == MLS_ROUTE_V2_INFER) {
        struct mlp_eval_info info = {0};
        struct mlp_v2_request v2;
        int rc = mlp_v2_decode(r->model, r->body ? r->body : "", r->len, r->ihcl, &v2, &err);
        if (rc) {
            mlp_error_write(&r->out, rc, &err);
            r->out_header_len = r->out.len;
        } else if (v2.monitor && where != ON_WORKER) {
            mlp_request_free(&v2.base); /* decoded again by the worker */
            return 1;
        } else if (v2.monitor) {
            struct mls_mcall *c = monitor_call(s, r, exec);
            r->handed_off = mls_monitor_v2(c, r->model, &v2);
            c->exec = NULL; /* (on this stack) */
            r->loss_name = ml_loss_find(r->model)->name;
            r->answer_status = c->status;
            return 0;
        } else {
            rc = mlp_v2_eval_decoded(r->model, &v2, exec, &r->out, &r->out_header_len, &info);
            if (rc == ML_ETOOLARGE && trial)
                return not_inline(r);
        }
        r->loss_name = info.loss_name;
        mls_metrics_elements(&s->metrics, info.loss_name, info.elements);
        r->answer_status = v2_status_of(rc);
        return 0;
    }
    /* mlp_parse_request: the inputs' arrays of numbers decoded from the text into doubles,
     * not a json_t per number (the root goes only to mlp_eval_value and mlp_eval_batch). */
    int rc = root ? 0 : mlp_parse_request(r->body ? r->body : "", r->len, &root, &err);
    /* The text is no longer needed: give its memory back before computing. */
    free(r->body_base);
    r->body = r->body_base = NULL;
    if (rc) {
        mlp_error_write(&r->out, rc, &err);
    } else if (r->route == MLS_ROUTE_LOSS) {
        struct mlp_eval_info info;
        rc = mlp_eval_value(root, exec, &r->out, &info);
        if (rc == ML_ETOOLARGE && trial) {
            r->root = root;
            return not_inline(r);
        }
        r->loss_name = info.loss_name;
        mls_metrics_elements(&s->metrics, info.loss_name, info.elements);
    } else {
        rc = mlp_eval_batch(root, exec, &r->out, &r->entries, count_entry, s);
        atomic_fetch_add_explicit(&s->metrics.batch_entries, r->entries, memory_order_relaxed);
    }
    json_decref(root);
    r->answer_status = http_status_of(rc);
    return 0;
}

/*
 * What a request answered on the HTTP thread may cost: a body of at most INLINE_MAX_BODY
 * bytes (parsed and decoded there) and a computation of at most INLINE_MAX_ELEMENTS
 * elements (a small body can broadcast to many). Every other connection of its thread,
 * health probes among them, waits while it runs, so these stay small: a request over either goes to
 * a worker (the element limit is known only once the document is decoded: it goes there with the
 * document). Measured: the note's 4x5 example adds about 18 us of CPU to the HTTP thread's part of
 * its request (41 us against 23).
 */
#define INLINE_MAX_BODY 4096
#define INLINE_MAX_ELEMENTS 4096

/*
 * Answers a small /v1/loss or v2 infer request on the HTTP thread -- with one HTTP thread,
 * only when every worker is busy; with several, always: 1 with r->out and r->answer_status
 * written, else 0. It would wait in the queue, maybe
 * behind a large computation, for less work than the hop to a worker and back (a
 * suspension, two thread wake-ups, a resume through libmicrohttpd's queue of resumed
 * connections: about 5 us of CPU, measured). With a worker idle it goes there instead:
 * the HTTP thread, which reads and writes every connection, is the one to keep free.
 * Measured with the note's 4x5 example under wrk -c64 on the 2-core machine: about 23 us of
 * CPU a request on the HTTP thread and 23 on the workers when they compute it, 41 on the
 * HTTP thread alone when it does, which then bounds the rate alone (10k against 25k
 * requests/s in one run). Batches and monitors always go to a worker, and so does
 * everything while draining, so that it is refused the same way.
 */
static int answer_inline(struct request *r)
{
    struct mls_server *s = r->srv;
    /* With several HTTP threads, each answers the small requests it reads, idle workers or
     * not: the hop's 5 us and its wake-ups go, and a thread busy computing one leaves the
     * others to read and answer the rest (probes among them). */
    if ((r->route != MLS_ROUTE_LOSS && r->route != MLS_ROUTE_V2_INFER) ||
        r->len > INLINE_MAX_BODY ||
        atomic_load_explicit(&s->state, memory_order_relaxed) == MLS_DRAINING ||
        (s->cfg.http_threads < 2 && !mls_pool_busy(&s->pool)))
        return 0;
    /* Under a server limit at or below the trial's, the trial's answer is the answer. */
    int trial = !s->cfg.max_elements || s->cfg.max_elements > INLINE_MAX_ELEMENTS;
    struct mlp_exec exec = {trial ? INLINE_MAX_ELEMENTS : s->cfg.max_elements, NULL, NULL};
    if (compute(s, r, &exec, trial ? INLINE_TRIAL : INLINE_FINAL))
        return 0;
    r->queue_ns = 0; /* counted as a request that waited for no worker */
    mls_metrics_queue_wait(&s->metrics, 0);
    return 1;
}

void mls_http_run_job(struct mls_pool_item *item, uint64_t wait_ns, int cancelled, void *cls)
{
    struct mls_server *s = cls;
    struct request *r = (struct request *)item;
    r->queue_ns = wait_ns;
    mls_metrics_queue_wait(&s->metrics, wait_ns);
    if (cancelled) {
        r->answer_status = mls_error_status(MLS_ERR_DRAINING);
        mls_error_write(&r->out, mls_error_name(MLS_ERR_DRAINING), "",
                        "the server is shutting down and its drain timeout passed before this "
                        "request was computed; retry on another instance");
    } else if ((double)wait_ns * 1e-9 > s->cfg.request_timeout) {
        char msg[200];
        snprintf(msg, sizeof(msg),
                 "the request waited %.3f s in the queue, longer than the request timeout "
                 "of %g s; it was not computed",
                 (double)wait_ns * 1e-9, s->cfg.request_timeout);
        r->answer_status = mls_error_status(MLS_ERR_DEADLINE_EXCEEDED);
        mls_error_write(&r->out, mls_error_name(MLS_ERR_DEADLINE_EXCEEDED), "", msg);
    } else {
        /* Large requests are split across the idle workers (the library decides what is
         * large). */
        struct mlp_exec exec = {s->cfg.max_elements, mls_pool_parallel_for, &s->pool};
        compute(s, r, &exec, ON_WORKER);
    }
    free(r->body_base);
    r->body = r->body_base = NULL;
    /* An observation was expected by the writer since submit(): it arrives now, with its
     * change or answered here. */
    int expected = mls_monitor_adds(r->route);
    if (r->handed_off) {
        /* The last touch: the writer thread answers (monitor_finish), maybe at once. */
        if (expected)
            mls_writer_arrive(&s->writer, r->mcall.submit);
        else
            mls_writer_submit(&s->writer, r->mcall.submit);
        return;
    }
    atomic_store_explicit(&r->state, REQ_DONE, memory_order_release);
    /* The last touch: from here the HTTP thread may answer and free r. */
    MHD_resume_connection(r->conn);
    if (expected)
        mls_writer_arrive(&s->writer, NULL);
}

/* ---- Handler --------------------------------------------------------------------------- */

/* The path of a request target: the origin-form ("/v1/loss") as it is, the absolute-form
 * ("http://host:8080/v1/loss", which RFC 9112 3.2.2 says a server must accept, though only
 * proxies are sent it) from its path on. */
static const char *target_path(const char *url)
{
    const char *p;
    if (!strncasecmp(url, "http://", 7))
        p = url + 7;
    else if (!strncasecmp(url, "https://", 8))
        p = url + 8;
    else
        return url;
    const char *slash = strchr(p, '/');
    return slash ? slash : "/";
}

/* The route of a path; v2 model routes also give the model and version segments. */
static enum mls_route route_of(const char *url, char *model, size_t model_size,
                               const char **version, size_t *version_len)
{
    static const enum mls_route fixed[] = {
        MLS_ROUTE_LOSS,     MLS_ROUTE_BATCH,   MLS_ROUTE_LOSSES,    MLS_ROUTE_HEALTHZ,
        MLS_ROUTE_READYZ,   MLS_ROUTE_METRICS, MLS_ROUTE_V2_SERVER, MLS_ROUTE_V2_LIVE,
        MLS_ROUTE_V2_READY, MLS_ROUTE_STATS};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        if (!strcmp(url, mls_route_path(fixed[i])))
            return fixed[i];
    if (mls_ui_route(url))
        return MLS_ROUTE_UI; /* static files: the page's, and the OpenAPI document */
    static const char prefix[] = "/v2/models/";
    if (strncmp(url, prefix, sizeof(prefix) - 1))
        return MLS_ROUTE_OTHER;
    const char *m = url + sizeof(prefix) - 1;
    const char *rest = strchr(m, '/');
    size_t mlen = rest ? (size_t)(rest - m) : strlen(m);
    if (!mlen || mlen >= model_size)
        return MLS_ROUTE_OTHER;
    memcpy(model, m, mlen);
    model[mlen] = '\0';
    *version = NULL;
    *version_len = 0;
    if (rest && !strncmp(rest, "/versions/", 10)) {
        const char *v = rest + 10;
        rest = strchr(v, '/');
        *version = v;
        *version_len = rest ? (size_t)(rest - v) : strlen(v);
    }
    if (!rest || !*rest)
        return MLS_ROUTE_V2_MODEL;
    if (!strcmp(rest, "/ready"))
        return MLS_ROUTE_V2_MODEL_READY;
    if (!strcmp(rest, "/infer"))
        return MLS_ROUTE_V2_INFER;
    return MLS_ROUTE_OTHER;
}

/* Whether a header value names the media type `want`, ignoring case and parameters. */
static int media_type_is(const char *v, const char *want)
{
    size_t n = strlen(want);
    while (*v == ' ' || *v == '\t')
        v++;
    if (strncasecmp(v, want, n))
        return 0;
    v += n;
    while (*v == ' ' || *v == '\t')
        v++;
    return *v == '\0' || *v == ';';
}

static void early(struct request *r, enum mls_error e, const char *field, const char *fmt, ...)
{
    va_list ap;
    r->early_status = mls_error_status(e);
    r->early_err = e;
    r->early_field = field;
    va_start(ap, fmt);
    vsnprintf(r->early_message, sizeof(r->early_message), fmt, ap);
    va_end(ap);
}

static void remote_address(struct request *r)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, r->remote,
                  sizeof(r->remote));
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, r->remote,
                  sizeof(r->remote));
}

/* ---- The memory budget ------------------------------------------------------------------ */

/*
 * Memory a body costs while it is decoded and evaluated, per byte: its own copy, then jansson
 * makes an object of every JSON number (with its array slot and the decoded element, about
 * 56 bytes), and the shortest number costs 2 bytes ("0,"). Measured: the peak RSS of
 * `maskloss eval` on 2M-element requests is 18.5 times the text for "0, " (3 bytes a
 * number), 10.6 for "0.5, ", 3.6 for 17-digit numbers; 31.5 for "0," with every element
 * answered (reduction none). Binary tensors are used where they lie, but an answer of every
 * element in JSON text costs about 20 bytes an element: measured 4.3 times the body for two
 * float32 inputs answered as JSON.
 */
#define JSON_COST_PER_BYTE 32
#define BINARY_COST_PER_BYTE 5

/* The memory a body of `bytes` may cost (saturating). */
static uint64_t body_cost(const struct request *r, uint64_t bytes)
{
    uint64_t json = bytes;
    if (r->route == MLS_ROUTE_V2_INFER && r->ihcl >= 0 && (uint64_t)r->ihcl < bytes)
        json = (uint64_t)r->ihcl;
    uint64_t binary = bytes - json;
    if (json > UINT64_MAX / (2 * JSON_COST_PER_BYTE) || binary > UINT64_MAX / 4)
        return UINT64_MAX;
    return json * JSON_COST_PER_BYTE + binary * BINARY_COST_PER_BYTE;
}

/* Why a request's bytes did not fit the budget. */
enum { BUDGET_OK, BUDGET_ADDRESS, BUDGET_SERVER };

/* Takes n more bytes of the budget for r: its client address's share, then the server's. */
static int budget_take(struct request *r, uint64_t n)
{
    struct mls_server *s = r->srv;
    uint64_t held;
    /* budget_held: what the others hold (r's own part is given back with the refusal). */
    if (mls_peer_take(&s->conns, r->cx, &r->peer, n, s->cfg.max_inflight_bytes_per_ip, &held)) {
        r->budget_held = held - (held < r->budget ? held : r->budget);
        return BUDGET_ADDRESS;
    }
    uint64_t used = atomic_load_explicit(&s->inflight_bytes, memory_order_relaxed);
    do {
        if (n > s->cfg.max_inflight_bytes || used > s->cfg.max_inflight_bytes - n) {
            mls_peer_give(&s->conns, r->peer, n);
            if (!r->budget)
                r->peer = NULL; /* its address may go once its connection does */
            r->budget_held = used - (used < r->budget ? used : r->budget);
            return BUDGET_SERVER;
        }
    } while (!atomic_compare_exchange_weak_explicit(&s->inflight_bytes, &used, used + n,
                                                    memory_order_relaxed, memory_order_relaxed));
    r->budget += n;
    return BUDGET_OK;
}

/* Gives back all r holds. */
static void budget_give(struct request *r)
{
    struct mls_server *s = r->srv;
    if (!r->budget)
        return;
    atomic_fetch_sub_explicit(&s->inflight_bytes, r->budget, memory_order_relaxed);
    mls_peer_give(&s->conns, r->peer, r->budget);
    r->budget = 0;
}

/* The refusal of a body that does not fit the budget: 413 when it never could, 503 when the
 * server's budget, or its client address's share, is in use (why: budget_take's answer). */
static enum MHD_Result send_over_budget(struct request *r, uint64_t cost, int why)
{
    struct mls_server *s = r->srv;
    const struct mls_config *c = &s->cfg;
    char msg[400];
    if (cost > c->max_inflight_bytes || cost > c->max_inflight_bytes_per_ip) {
        int server = cost > c->max_inflight_bytes;
        snprintf(
            msg, sizeof(msg),
            "decoding this request body needs about %llu bytes of memory, more than the "
            "server's budget of %llu for %s (%s); send smaller requests, or binary "
            "tensors",
            (unsigned long long)cost,
            (unsigned long long)(server ? c->max_inflight_bytes : c->max_inflight_bytes_per_ip),
            server ? "all requests" : "the requests of one client address",
            server ? "--max-inflight-bytes" : "--max-inflight-bytes-per-ip");
        return send_error(r, MLS_ERR_TOO_LARGE, "body", msg);
    }
    if (why == BUDGET_ADDRESS)
        snprintf(msg, sizeof(msg),
                 "the memory for requests in flight from your address is in use (%llu of %llu "
                 "bytes, --max-inflight-bytes-per-ip) and this request needs about %llu; retry "
                 "once your other requests are answered",
                 (unsigned long long)r->budget_held,
                 (unsigned long long)c->max_inflight_bytes_per_ip, (unsigned long long)cost);
    else
        snprintf(msg, sizeof(msg),
                 "the server's memory for requests in flight is in use (%llu of %llu bytes) and "
                 "this request needs about %llu; retry later",
                 (unsigned long long)r->budget_held, (unsigned long long)c->max_inflight_bytes,
                 (unsigned long long)cost);
    return send_error(r, MLS_ERR_MEMORY_BUDGET_FULL, "", msg);
}

/* ---- Headers ---------------------------------------------------------------------------- */

struct framing {
    unsigned content_lengths;
    const char *transfer_encoding;
    unsigned transfer_encodings;
    unsigned hosts, ihcls, authorizations;
    const char *bad_name; /* a header whose name or value is not what RFC 9110 allows */
};

/* RFC 9110 5.1: a field name is a token. */
static int is_token(const char *s, size_t n)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (!n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
              (c && strchr(extra, c))))
            return 0;
    }
    return 1;
}

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     size_t key_size, const char *value, size_t value_size)
{
    struct framing *f = cls;
    (void)kind;
    /* libmicrohttpd 0.9.75 lets through names with spaces ("Content-Length : 5", which it
     * then ignores, so that the body is read as the next request), obsolete line folding
     * (appended to the name), and CR or NUL inside values (NUL cuts the value short). */
    if (!f->bad_name && (!is_token(key, key_size) || (value && (strlen(value) != value_size ||
                                                                memchr(value, '\r', value_size) ||
                                                                memchr(value, '\n', value_size)))))
        f->bad_name = key;
    if (!strcasecmp(key, MHD_HTTP_HEADER_HOST))
        f->hosts++;
    else if (!strcasecmp(key, "Inference-Header-Content-Length"))
        f->ihcls++;
    else if (!strcasecmp(key, MHD_HTTP_HEADER_AUTHORIZATION))
        f->authorizations++;
    else if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH))
        f->content_lengths++;
    else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        f->transfer_encodings++;
        f->transfer_encoding = value;
    }
    return MHD_YES;
}

/*
 * A message whose length is ambiguous is refused and its connection closed (RFC 9112 6.3):
 * behind a proxy that reads the length the other way, the rest of the body would be taken
 * for another request (request smuggling). libmicrohttpd takes the first Content-Length,
 * prefers chunked to Content-Length, and waits for ever on another transfer coding.
 */
static int check_framing(struct request *r, int http11)
{
    struct framing f = {0, NULL, 0, 0, 0, 0, NULL};
    MHD_get_connection_values_n(r->conn, MHD_HEADER_KIND, count_framing, &f);
    if (f.bad_name) {
        early(r, MLS_ERR_INVALID_HTTP, "headers",
              "the header '%.60s' is malformed: a field name is a token (no spaces, no "
              "folded lines) and a value has no CR, LF or NUL",
              f.bad_name);
        return -1;
    }
    if (f.hosts != 1 && http11) {
        early(r, MLS_ERR_INVALID_HTTP, "Host",
              "an HTTP/1.1 request has exactly one Host header, this one has %u", f.hosts);
        return -1;
    }
    if (f.authorizations > 1) {
        /* (a proxy in front that read another of them would disagree on who is asking) */
        early(r, MLS_ERR_INVALID_HTTP, "Authorization",
              "the request has %u Authorization headers: send one", f.authorizations);
        return -1;
    }
    if (f.ihcls > 1) {
        early(r, MLS_ERR_INVALID_HTTP, "Inference-Header-Content-Length",
              "the request has %u Inference-Header-Content-Length headers: send one", f.ihcls);
        return -1;
    }
    if (f.content_lengths > 1) {
        early(r, MLS_ERR_INVALID_HTTP, "Content-Length",
              "the request has %u Content-Length headers: send one", f.content_lengths);
        return -1;
    }
    if (f.transfer_encodings > 1 ||
        (f.transfer_encoding && strcasecmp(f.transfer_encoding, "chunked"))) {
        early(r, MLS_ERR_NOT_IMPLEMENTED, "Transfer-Encoding",
              "Transfer-Encoding '%.60s' is not supported: send the body with Content-Length "
              "or Transfer-Encoding: chunked alone",
              f.transfer_encoding ? f.transfer_encoding : "");
        return -1;
    }
    if (f.transfer_encoding && !http11) {
        /* RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing (an
         * HTTP/1.0 proxy in front would not have read it as chunked). */
        early(r, MLS_ERR_INVALID_HTTP, "Transfer-Encoding",
              "an HTTP/1.0 request cannot use Transfer-Encoding: send Content-Length, or use "
              "HTTP/1.1");
        return -1;
    }
    if (f.transfer_encoding && f.content_lengths) {
        early(r, MLS_ERR_INVALID_HTTP, "Transfer-Encoding",
              "the request has both Content-Length and Transfer-Encoding: send one of them");
        return -1;
    }
    return 0;
}

/* Answers before the body is read: libmicrohttpd then closes the connection, which lingers
 * (conn.h) so that the client reads the answer. */
static enum MHD_Result refuse_now(struct request *r)
{
    mls_conn_set_linger(r->cx);
    return send_error(r, r->early_err, r->early_field, r->early_message);
}

/* Whether the request announces a body (its length, or chunks). */
static int has_body(const struct request *r)
{
    return r->content_length ||
           MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
}

/* A refusal decided from the headers: with a body announced, it goes now, unread, and the
 * connection closes, lingering; without, the final call sends it and keep-alive stays. */
static enum MHD_Result refuse_from_headers(struct request *r)
{
    return has_body(r) ? refuse_now(r) : MHD_YES;
}

/* Whether the route is one of the probes and /metrics, which no quota limits: a balancer or
 * Prometheus must always get through. /v1/stats is /metrics for the status page, and the
 * page's files are constant bytes, as cheap to answer as a probe. */
static int unlimited(enum mls_route route)
{
    return route == MLS_ROUTE_HEALTHZ || route == MLS_ROUTE_READYZ || route == MLS_ROUTE_V2_LIVE ||
           route == MLS_ROUTE_V2_READY || route == MLS_ROUTE_METRICS || route == MLS_ROUTE_STATS ||
           route == MLS_ROUTE_UI;
}

/*
 * The token's decision, then the client's quotas (quota.h): 0 when the request may go on,
 * -1 with its refusal set (401, 403, 429). Each request's final decision is counted once.
 */
static int admit(struct request *r, const char *method, const char *url)
{
    struct mls_server *s = r->srv;
    const char *authorization =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    r->token_sent = authorization != NULL;
    const char *force = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "force");
    r->need = mls_auth_scope_of(r->route, method, force && mls_monitor_force(force) > 0,
                                s->cfg.metrics_open);
    r->decision = mls_auth_check(&s->auth, authorization, r->need, r->token, &r->auth_counter);
    if (r->decision == MLS_DECISION_UNAUTHORIZED) {
        early(r, MLS_ERR_UNAUTHORIZED, "Authorization",
              "%s: send 'Authorization: Bearer <token>' with a token of the server's "
              "--auth-file (maskloss token new makes one)",
              authorization ? "the token is not one of this server's" : "a token is needed");
    } else if (r->decision == MLS_DECISION_FORBIDDEN) {
        early(r, MLS_ERR_FORBIDDEN, "Authorization",
              "token %s may not %s %.100s%s: that needs the scope %s%s", r->token, method, url,
              force && r->route == MLS_ROUTE_MONITOR ? "?force" : "", mlp_scope_name(r->need),
              r->need == MLP_SCOPE_ADMIN ? "" : " (or admin)");
    } else if (mls_quota_on(&s->quota) && !unlimited(r->route)) {
        /* The client: the token when one was accepted, else the address. */
        unsigned char key[MLS_QUOTA_KEY_MAX];
        size_t len;
        if (r->decision == MLS_DECISION_ALLOWED) {
            len = strlen(r->token);
            key[0] = MLS_QUOTA_KEY_TOKEN;
            memcpy(key + 1, r->token, len);
            len++;
        } else {
            key[0] = MLS_QUOTA_KEY_ADDRESS;
            mls_conn_address(r->cx, key + 1);
            len = 17;
        }
        double limit = 0;
        enum mls_quota_verdict v = mls_quota_take(&s->quota, key, len, r->t_start,
                                                  is_compute(r->route) || is_monitor(r->route),
                                                  &r->held, &r->retry_after, &limit);
        if (v != MLS_QUOTA_OK) {
            char who[MLP_TOKEN_NAME_MAX + 32];
            if (r->decision == MLS_DECISION_ALLOWED)
                snprintf(who, sizeof(who), "token %s", r->token);
            else
                snprintf(who, sizeof(who), "your address");
            r->decision = MLS_DECISION_RATE_LIMITED;
            if (v == MLS_QUOTA_RATE)
                early(r, MLS_ERR_TOO_MANY_REQUESTS, "",
                      "%s is over its rate of %g request%s a second (--rate-limit; bursts of %g: "
                      "--rate-burst): retry in %u s",
                      who, limit, limit == 1 ? "" : "s", s->quota.burst, r->retry_after);
            else
                early(r, MLS_ERR_TOO_MANY_REQUESTS, "",
                      "%s already has %g request%s in flight, its share of the server's queue "
                      "(--queue-share): retry once one is answered",
                      who, limit, limit == 1 ? "" : "s");
        }
    }
    /* A request that needed no token but was refused for its address's quota is counted
     * under "(none)", as the requests without a token are. */
    if (r->decision == MLS_DECISION_RATE_LIMITED && r->auth_counter == SIZE_MAX)
        r->auth_counter = mls_auth_none(&s->auth);
    mls_auth_count(&s->auth, r->auth_counter, r->decision);
    return r->early_status ? -1 : 0;
}

/*
 * --cors-origin: keeps the request's Origin when it is allowed, and recognizes a preflight
 * (OPTIONS with Access-Control-Request-Method and no body: Fetch's CORS protocol). 0, or -1
 * with a refusal set: a preflight from an origin not allowed, answered 403 so that the page's
 * developer reads why rather than a browser's generic CORS failure.
 */
static int cors(struct request *r, const char *method)
{
    const char *origin =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_ORIGIN);
    int allowed = origin && strlen(origin) <= MLS_ORIGIN_MAX
                      ? mls_origin_allowed(r->srv->cfg.cors_origins, origin)
                      : 0;
    /* "*" is answered as "*", not by echoing what the client sent: an Origin allowed only by
     * it is any bytes at all, control characters included. */
    if (allowed)
        snprintf(r->origin, sizeof(r->origin), "%s", allowed == MLS_ORIGIN_ANY ? "*" : origin);
    /* A browser's preflight never has a body. One announced is not a preflight but a request
     * like any other, held to its token: a preflight skips the token and the memory budget,
     * and the body of a compute route would be stored. */
    if (strcmp(method, MHD_HTTP_METHOD_OPTIONS) || r->route == MLS_ROUTE_OTHER ||
        !MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                     MHD_HTTP_HEADER_ACCESS_CONTROL_REQUEST_METHOD) ||
        has_body(r))
        return 0;
    if (!allowed) {
        early(r, MLS_ERR_FORBIDDEN, "Origin",
              "origin '%.100s' may not call this server from a browser: it is not one of the "
              "server's --cors-origin",
              origin ? origin : "(none)");
        return -1;
    }
    r->preflight = 1;
    return 0;
}

static enum MHD_Result on_headers(struct mls_server *s, struct MHD_Connection *conn,
                                  const char *url, const char *method, const char *http_version,
                                  void **con_cls)
{
    struct request *r = calloc(1, sizeof(*r));
    if (!r)
        return MHD_NO; /* closes the connection: nothing else can be done without memory */
    r->srv = s;
    r->conn = conn;
    r->t_start = uv_hrtime();
    atomic_init(&r->state, REQ_RECEIVING);
    atomic_fetch_add_explicit(&s->metrics.in_flight, 1, memory_order_relaxed);
    *con_cls = r;
    r->cx = mls_conn_of(conn);
    mls_conn_headers_done(&s->conns, r->cx);
    url = target_path(url);
    snprintf(r->method, sizeof(r->method), "%s", method);
    snprintf(r->path, sizeof(r->path), "%s", url);
    if (s->cfg.access_log)
        remote_address(r);
    if (check_framing(r, !strcmp(http_version, MHD_HTTP_VERSION_1_1)))
        return refuse_now(r);

    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl)
        r->content_length = strtoull(cl, NULL, 10); /* libmicrohttpd rejects invalid ones */

    const char *version = NULL;
    size_t version_len = 0;
    r->ihcl = -1;
    r->route = mls_monitor_route_of(url, r->model, MLS_MONITOR_NAME_MAX + 1);
    if (r->route == MLS_ROUTE_OTHER)
        r->route = route_of(url, r->model, sizeof(r->model), &version, &version_len);
    int post = !strcmp(method, MHD_HTTP_METHOD_POST);
    r->head = !strcmp(method, MHD_HTTP_METHOD_HEAD);
    int get = r->head || !strcmp(method, MHD_HTTP_METHOD_GET);

    if (s->cfg.cors_origins[0] && cors(r, method) < 0)
        return refuse_from_headers(r);
    if (r->preflight)
        return MHD_YES; /* answered by the final call, without a token (browsers send none) */

    /* Who may, and how much, before anything else of the request is looked at or a byte of
     * its body read. */
    if (admit(r, method, url) < 0)
        return refuse_from_headers(r);
    if (r->route == MLS_ROUTE_OTHER) {
        early(r, MLS_ERR_NOT_FOUND, "path",
              "no route %.40s %.80s: the routes are POST /v1/loss, POST /v1/batch, "
              "GET /v1/losses, /v1/monitors, GET /healthz, GET /readyz, GET /metrics, "
              "GET /v1/stats, the status page at GET /, and the v2 protocol under /v2",
              method, url);
    } else if (r->route == MLS_ROUTE_UI && !(r->asset = mls_ui_find(url))) {
        early(r, MLS_ERR_NOT_FOUND, "path",
              "no file %.80s: the status page is GET / and its files GET /ui/<name>", url);
    } else if (!is_monitor(r->route) && r->model[0] && !ml_loss_find(r->model)) {
        early(r, MLS_ERR_UNKNOWN_MODEL, "model",
              "unknown model '%.100s': every loss of GET /v1/losses is a model", r->model);
    } else if (version && !(version_len == 1 && version[0] == '1')) {
        early(r, MLS_ERR_UNKNOWN_VERSION, "version", "model %.100s has version 1 only, not '%.*s'",
              r->model, (int)(version_len > 40 ? 40 : version_len), version);
    } else if (is_monitor(r->route)   ? !mls_monitor_method_ok(r->route, method)
               : is_compute(r->route) ? !post
                                      : !get) {
        early(r, MLS_ERR_METHOD_NOT_ALLOWED, "method", "method %.40s is not allowed on %s: use %s",
              method, url, allowed_methods(r->route));
    }

    if (r->content_length > s->cfg.max_body_bytes) {
        /* Refuse now, before a byte of the body is read: the alternative is to read it all. */
        if (!r->early_status)
            early(r, MLS_ERR_TOO_LARGE, "body",
                  "the request body of %llu bytes exceeds the limit of %llu",
                  (unsigned long long)r->content_length, (unsigned long long)s->cfg.max_body_bytes);
        return refuse_now(r);
    }
    /* The static files read no query: a cache-buster or a link's tracking tags ask nothing of
     * them (the document's x-query-ignored). */
    if (!r->early_status && r->route != MLS_ROUTE_UI) {
        r->query.route = r->route;
        r->query.method = r->method;
        MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, mls_query_arg, &r->query);
        if (r->query.bad[0]) {
            char takes[96];
            mls_query_takes(r->route, method, takes, sizeof(takes));
            /* (a body's route: its parameters are in the body, not the query) */
            early(r, MLS_ERR_INVALID_QUERY, r->query.bad,
                  "query argument \"%s\" of %.10s %.80s: %s (it takes %s%s)", r->query.bad, method,
                  url, r->query.why, takes,
                  !strcmp(takes, "none") && takes_body(r) ? "; the request is its JSON body" : "");
        }
    }
    if (r->early_status || !takes_body(r))
        return MHD_YES;

    const char *ct =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *ce =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING);
    if (r->route == MLS_ROUTE_V2_INFER) {
        /* Like Triton, the v2 route does not read Content-Type: its clients send none,
         * application/json, application/octet-stream, or curl's form type. */
        const char *ih =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Inference-Header-Content-Length");
        char *end = NULL;
        if (ih) {
            errno = 0;
            r->ihcl = *ih >= '0' && *ih <= '9' ? strtoll(ih, &end, 10) : -1;
            if (!end || *end || errno || r->ihcl < 0)
                early(r, MLS_ERR_INVALID_BINARY_HEADER, "Inference-Header-Content-Length",
                      "Inference-Header-Content-Length '%.40s' is not a byte count", ih);
            else
                /* Align the binary data that follows the JSON header, so that tensors can be
                 * used where they lie. */
                r->pad = (size_t)((16 - r->ihcl % 16) % 16);
        }
    } else if (ct && !media_type_is(ct, "application/json")) {
        /* A missing Content-Type is accepted (some clients send none); a wrong one is not. */
        early(r, MLS_ERR_UNSUPPORTED_MEDIA_TYPE, "Content-Type",
              "Content-Type '%.100s' is not supported: send application/json%s", ct,
              /* the commonest way to get here */
              media_type_is(ct, "application/x-www-form-urlencoded")
                  ? " (curl -d sends this type: add -H 'Content-Type: application/json')"
                  : "");
    }
    if (!r->early_status && ce && !media_type_is(ce, "identity"))
        early(r, MLS_ERR_UNSUPPORTED_MEDIA_TYPE, "Content-Encoding",
              "Content-Encoding '%.100s' is not supported: send the body uncompressed", ce);
    if (!r->early_status && r->content_length) {
        /* Admitted with its whole cost, or refused before its body is read. */
        uint64_t cost = body_cost(r, r->content_length);
        int why = budget_take(r, cost);
        if (why != BUDGET_OK) {
            mls_conn_set_linger(r->cx);
            return send_over_budget(r, cost, why);
        }
    }
    return MHD_YES;
}

/*
 * Bodies from this size on are asked to live in transparent huge pages (where the kernel
 * offers them on request: /sys/kernel/mm/transparent_hugepage/enabled "madvise"). Their
 * memory is new to the process each time (malloc maps it, free unmaps it), and its first
 * touch by the copy from libmicrohttpd's buffer, on the HTTP thread, faulted in every 4 KiB
 * page, then the free unmapped them one by one before the answer left: measured on a 200 MB
 * binary v2 request, 15 to 55 ms of unmapping alone, 1 to 5 ms with huge pages, and less
 * time receiving.
 */
#define HUGE_BODY ((size_t)4 << 20)
#define HUGE_PAGE ((uintptr_t)2 << 20)

static void huge_pages(void *p, size_t len)
{
#ifdef MADV_HUGEPAGE
    uintptr_t lo = ((uintptr_t)p + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    uintptr_t hi = ((uintptr_t)p + len) & ~(HUGE_PAGE - 1);
    if (hi > lo)
        madvise((void *)lo, hi - lo, MADV_HUGEPAGE); /* advice: nothing changes if refused */
#else
    (void)p;
    (void)len;
#endif
}

static enum MHD_Result on_body(struct request *r, const char *data, size_t n)
{
    struct mls_server *s = r->srv;
    r->bytes_in += n;
    mls_conn_body_progress(&s->conns, r->cx, r->bytes_in);
    /* libmicrohttpd's timeout is an idle one: a client trickling a byte at a time would
     * hold the connection for ever. Bound the whole body instead. */
    if ((double)(uv_hrtime() - r->t_start) * 1e-9 > s->cfg.connection_timeout) {
        r->timed_out = 1;
        return MHD_NO; /* closes the connection; no answer can be queued mid-body */
    }
    if (r->early_status || !takes_body(r) || r->too_large || r->body_oom || r->over_budget)
        return MHD_YES; /* dropped */
    if (r->len + n > s->cfg.max_body_bytes) {
        r->too_large = 1;
        free(r->body_base);
        r->body = r->body_base = NULL;
        r->len = r->cap = 0;
        return MHD_YES;
    }
    if (!r->content_length) {
        /* Chunked: the budget grows with the body. */
        uint64_t cost = body_cost(r, r->len + n);
        if (cost > r->budget && (r->over_budget = budget_take(r, cost - r->budget)) != BUDGET_OK) {
            free(r->body_base);
            r->body = r->body_base = NULL;
            r->len = r->cap = 0;
            budget_give(r); /* nothing is kept while the rest is read and dropped */
            return MHD_YES;
        }
    }
    if (r->len + n > r->cap) {
        /* The declared length at once when known (no more: a small body stays in malloc's
         * per-thread cache, where 16 KiB went through its bins and their consolidation),
         * else doubling, never past the limit. */
        size_t cap = r->cap ? r->cap * 2 : 16384;
        if (r->content_length >= r->len + n)
            cap = (size_t)r->content_length;
        if (cap < r->len + n)
            cap = r->len + n;
        if (cap > s->cfg.max_body_bytes)
            cap = (size_t)s->cfg.max_body_bytes;
        char *p = realloc(r->body_base, r->pad + cap);
        if (!p) {
            r->body_oom = 1;
            free(r->body_base);
            r->body = r->body_base = NULL;
            r->len = r->cap = 0;
            return MHD_YES;
        }
        r->body_base = p;
        r->body = p + r->pad;
        r->cap = cap;
        if (cap >= HUGE_BODY)
            huge_pages(p, r->pad + cap);
    }
    memcpy(r->body + r->len, data, n);
    r->len += n;
    return MHD_YES;
}

static enum MHD_Result send_ready(struct request *r)
{
    static const char ready[] = "{\"ready\":true}";
    int state = atomic_load_explicit(&r->srv->state, memory_order_relaxed);
    /* A replica that cannot reach the shared state is taken out of the balancer's rotation:
     * its monitors' answers would fail or be behind. */
    int down = atomic_load_explicit(&r->srv->writer.store_down, memory_order_relaxed);
    if (state == MLS_READY && !down)
        return send_static(r, MHD_HTTP_OK, ready, sizeof(ready) - 1, "application/json");
    /* Not ready: the error object, with "ready": false first. */
    enum mls_error e = state == MLS_STARTING ? MLS_ERR_STARTING
                       : state == MLS_READY  ? MLS_ERR_STATE_UNAVAILABLE
                                             : MLS_ERR_DRAINING;
    struct mlp_buf b = {0};
    mlp_buf_puts(&b, "{\"ready\":false,");
    mls_error_members(&b, mls_error_name(e), "",
                      state == MLS_STARTING ? "the server is starting"
                      : state == MLS_READY
                          ? "the monitors' shared state (PostgreSQL) cannot be reached; the "
                            "server reconnects by itself"
                          : "the server is draining before it stops");
    mlp_buf_puts(&b, "}");
    return send_json(r, mls_error_status(e), &b);
}

/* The gauges /metrics and /v1/stats sample from their owners. */
static void sample_gauges(struct mls_server *s, struct mls_gauges *g)
{
    *g = (struct mls_gauges){.queue_capacity = s->cfg.queue_depth, .workers = s->cfg.workers};
    mls_pool_counts(&s->pool, &g->queued, &g->running);
    g->parts_helped = mls_pool_parts_helped(&s->pool);
    g->ready = atomic_load_explicit(&s->state, memory_order_relaxed) == MLS_READY &&
               !atomic_load_explicit(&s->writer.store_down, memory_order_relaxed);
    g->inflight_bytes = atomic_load_explicit(&s->inflight_bytes, memory_order_relaxed);
    g->inflight_limit = s->cfg.max_inflight_bytes;
    g->header_timeouts = atomic_load_explicit(&s->conns.header_timeouts, memory_order_relaxed);
    g->lingered = atomic_load_explicit(&s->conns.lingered, memory_order_relaxed);
    g->tls_failed = atomic_load_explicit(&s->tls_failed, memory_order_relaxed);
    g->state_commits = atomic_load_explicit(&s->writer.commits, memory_order_relaxed);
    g->state_commit_ns = atomic_load_explicit(&s->writer.commit_ns, memory_order_relaxed);
    g->state_observations = atomic_load_explicit(&s->writer.ops_committed, memory_order_relaxed);
    g->state_failures = atomic_load_explicit(&s->writer.store_failures, memory_order_relaxed);
}

/* GET /v1/stats: the counters of /metrics, and the same gauges, as JSON for the status page. */
static enum MHD_Result send_stats(struct request *r)
{
    struct mls_server *s = r->srv;
    struct mls_gauges g;
    struct timespec ts;
    sample_gauges(s, &g);
    clock_gettime(CLOCK_REALTIME, &ts);
    struct mls_stats_info info = {.gauges = &g,
                                  .http_threads = s->cfg.http_threads,
                                  .now = (double)ts.tv_sec + ts.tv_nsec * 1e-9};
    struct mlp_buf b = {0};
    mls_ui_write_stats(&s->metrics, &info, &b);
    return send_json(r, MHD_HTTP_OK, &b);
}

/* GET / and /ui/<file>: the embedded file, or 304 when the client's copy is current. */
static enum MHD_Result send_asset(struct request *r)
{
    const struct mls_ui_asset *a = r->asset;
    const char *inm =
        MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    int fresh = inm && mls_ui_etag_matches(inm, a->etag);
    size_t len = fresh ? 0 : a->len;
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, a->etag);
    /* Kept, but asked again each time: a new build's page is never mixed with an old one. */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return queue(r, fresh ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK, resp,
                 fresh ? NULL : a->content_type, len);
}

static enum MHD_Result send_metrics(struct request *r)
{
    struct mls_server *s = r->srv;
    struct mls_gauges g;
    struct mlp_buf b = {0};
    sample_gauges(s, &g);
    mls_metrics_write(&s->metrics, &g, &b);
    mls_registry_write_metrics(&s->monitors, &b);
    mls_auth_write_metrics(&s->auth, &b);
    mls_quota_write_metrics(&s->quota, &b);
    if (b.failed) {
        free(b.data);
        return send_error(r, MLS_ERR_OUT_OF_MEMORY, "",
                          "the server ran out of memory writing the metrics");
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(b.len, b.data, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(b.data);
        return MHD_NO;
    }
    return queue(r, MHD_HTTP_OK, resp, "text/plain; version=0.0.4; charset=utf-8", b.len);
}

static enum MHD_Result submit(struct request *r)
{
    struct mls_server *s = r->srv;
    if (r->too_large) {
        char msg[160];
        snprintf(msg, sizeof(msg), "the request body exceeds the limit of %llu bytes",
                 (unsigned long long)s->cfg.max_body_bytes);
        return send_error(r, MLS_ERR_TOO_LARGE, "body", msg);
    }
    if (r->body_oom)
        return send_error(r, MLS_ERR_OUT_OF_MEMORY, "body",
                          "the server ran out of memory storing the request body");
    if (r->over_budget)
        return send_over_budget(r, body_cost(r, r->bytes_in), r->over_budget);
    if (!r->final_seen && answer_inline(r))
        return send_json(r, r->answer_status, &r->out);
    if (!r->final_seen) {
        /* Return once without an answer: libmicrohttpd then stops reading this connection
         * (it waits for the answer). Suspended at once, it would keep reading it across the
         * suspension, and on resuming take a client's half-close (shutdown(SHUT_WR) after a
         * complete request, which is legal) for an error and drop the answer. Being called
         * again costs one turn of its event loop. */
        r->final_seen = 1;
        return MHD_YES;
    }
    switch (mls_pool_reserve(&s->pool)) {
    case MLS_POOL_FULL: {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "the server is busy: its queue of %u waiting requests is full; retry later",
                 s->cfg.queue_depth);
        return send_error(r, MLS_ERR_QUEUE_FULL, "", msg);
    }
    case MLS_POOL_CLOSED:
        return send_error(r, MLS_ERR_DRAINING, "",
                          "the server is shutting down and accepts no new requests");
    default:
        break;
    }
    atomic_store_explicit(&r->state, REQ_QUEUED, memory_order_relaxed);
    /* Suspend before the job becomes visible: a resume that overtook the suspend would
     * cancel it and leave the connection suspended for ever. */
    MHD_suspend_connection(r->conn);
    if (mls_monitor_adds(r->route))
        mls_writer_expect(&s->writer); /* matched in mls_http_run_job */
    mls_pool_push(&s->pool, &r->item); /* r belongs to the worker from here */
    return MHD_YES;
}

static enum MHD_Result on_final(struct request *r)
{
    struct mls_server *s = r->srv;
    if (!r->final_seen) /* called again for the same request: once is enough */
        mls_conn_body_done(&s->conns, r->cx);
    if (atomic_load_explicit(&r->state, memory_order_acquire) == REQ_DONE)
        return send_json(r, r->answer_status, &r->out);
    if (r->early_status)
        return send_error(r, r->early_err, r->early_field, r->early_message);
    if (r->preflight)
        return send_static(r, MHD_HTTP_NO_CONTENT, "", 0, NULL);
    switch (r->route) {
    case MLS_ROUTE_HEALTHZ: {
        static const char ok[] = "{\"status\":\"ok\"}";
        return send_static(r, MHD_HTTP_OK, ok, sizeof(ok) - 1, "application/json");
    }
    case MLS_ROUTE_READYZ:
        return send_ready(r);
    case MLS_ROUTE_LOSSES:
        return send_static(r, MHD_HTTP_OK, s->catalogue, s->catalogue_len, "application/json");
    case MLS_ROUTE_METRICS:
        return send_metrics(r);
    case MLS_ROUTE_STATS:
        return send_stats(r);
    case MLS_ROUTE_UI:
        return send_asset(r);
    case MLS_ROUTE_V2_SERVER: {
        struct mlp_buf b = {0};
        mlp_v2_server_metadata(&b);
        return send_json(r, MHD_HTTP_OK, &b);
    }
    case MLS_ROUTE_V2_LIVE: {
        static const char live[] = "{\"live\":true}";
        return send_static(r, MHD_HTTP_OK, live, sizeof(live) - 1, "application/json");
    }
    case MLS_ROUTE_V2_READY:
        return send_ready(r);
    case MLS_ROUTE_V2_MODEL: {
        struct mlp_buf b = {0};
        mlp_v2_model_metadata(&b, ml_loss_find(r->model));
        return send_json(r, MHD_HTTP_OK, &b);
    }
    case MLS_ROUTE_V2_MODEL_READY: {
        if (atomic_load_explicit(&s->state, memory_order_relaxed) != MLS_READY)
            return send_ready(r);
        struct mlp_buf b = {0};
        mlp_buf_puts(&b, "{\"name\":");
        mlp_buf_string(&b, r->model);
        mlp_buf_puts(&b, ",\"ready\":true}");
        return send_json(r, MHD_HTTP_OK, &b);
    }
    default:
        return submit(r);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    struct request *r = *con_cls;
    if (!r)
        return on_headers(cls, conn, url, method, version, con_cls);
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        return on_body(r, upload_data, n);
    }
    return on_final(r);
}

/* ---- Completion: metrics, access log, cleanup ------------------------------------------ */

static void access_log(struct request *r, const char *aborted, uint64_t total_ns)
{
    struct mlp_buf b = {0};
    char tmp[96];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
    mlp_buf_puts(&b, "{\"time\":\"");
    mlp_buf_puts(&b, tmp);
    snprintf(tmp, sizeof(tmp), ".%03ldZ\",\"remote\":", ts.tv_nsec / 1000000);
    mlp_buf_puts(&b, tmp);
    mlp_buf_string(&b, r->remote);
    mlp_buf_puts(&b, ",\"method\":");
    mlp_buf_string(&b, r->method);
    mlp_buf_puts(&b, ",\"path\":");
    mlp_buf_string(&b, r->path);
    snprintf(tmp, sizeof(tmp), ",\"status\":%u,\"bytes_in\":%llu,\"bytes_out\":%llu", r->status,
             (unsigned long long)r->bytes_in, (unsigned long long)r->bytes_out);
    mlp_buf_puts(&b, tmp);
    snprintf(tmp, sizeof(tmp), ",\"queue_seconds\":%.6f,\"total_seconds\":%.6f",
             (double)r->queue_ns * 1e-9, (double)total_ns * 1e-9);
    mlp_buf_puts(&b, tmp);
    mlp_buf_puts(&b, ",\"loss\":");
    if (r->loss_name)
        mlp_buf_string(&b, r->loss_name);
    else
        mlp_buf_puts(&b, "null");
    if (r->route == MLS_ROUTE_BATCH) {
        snprintf(tmp, sizeof(tmp), ",\"entries\":%zu", r->entries);
        mlp_buf_puts(&b, tmp);
    }
    if (r->decision != MLS_DECISION_OPEN) {
        mlp_buf_puts(&b, ",\"token\":");
        if (r->token[0])
            mlp_buf_string(&b, r->token);
        else
            mlp_buf_puts(&b, "null");
        mlp_buf_puts(&b, ",\"decision\":");
        mlp_buf_string(&b, mls_decision_name(r->decision));
    }
    if (r->model[0] && is_monitor(r->route) && r->status < 400 &&
        mls_auth_scope_of(r->route, r->method, 0, 1) != MLP_SCOPE_MONITOR_READ) {
        mlp_buf_puts(&b, ",\"monitor\":");
        mlp_buf_string(&b, r->model);
    }
    if (aborted) {
        mlp_buf_puts(&b, ",\"aborted\":");
        mlp_buf_string(&b, aborted);
    }
    mlp_buf_puts(&b, "}\n");
    if (!b.failed)
        fwrite(b.data, 1, b.len, stderr); /* one write per line: lines never interleave */
    free(b.data);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct mls_server *s = cls;
    struct request *r = *con_cls;
    (void)conn;
    if (!r)
        return;
    uint64_t total = uv_hrtime() - r->t_start;
    const char *aborted = NULL;
    if (r->stream && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        r->bytes_out = r->stream->sent; /* the client left mid-answer */
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK && r->status) {
        mls_metrics_request(&s->metrics, r->route, r->status, total, r->bytes_in, r->bytes_out);
    } else {
        enum mls_abort why;
        if (r->timed_out || toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
            why = MLS_ABORT_TIMEOUT;
        else if (toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT ||
                 toe == MHD_REQUEST_TERMINATED_READ_ERROR ||
                 /* a socket error while the body arrives or once an answer is queued: the
                  * client's side failed (a reset between two reads of the body) */
                 (toe == MHD_REQUEST_TERMINATED_WITH_ERROR &&
                  (r->status ||
                   atomic_load_explicit(&r->state, memory_order_relaxed) == REQ_RECEIVING)))
            why = MLS_ABORT_CLIENT;
        else if (toe == MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN)
            why = MLS_ABORT_SHUTDOWN;
        else
            why = MLS_ABORT_ERROR;
        static const char *const names[] = {"timeout", "client_abort", "error", "shutdown"};
        aborted = names[why];
        mls_metrics_abort(&s->metrics, why, r->bytes_in);
    }
    if (s->cfg.access_log)
        access_log(r, aborted, total);
    budget_give(r);
    mls_quota_release(&s->quota, r->held);
    mls_conn_request_done(&s->conns, r->cx);
    free(r->body_base);
    free(r->out.data);
    json_decref(r->root);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub_explicit(&s->metrics.in_flight, 1, memory_order_relaxed);
}

/* ---- Start ----------------------------------------------------------------------------- */

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/*
 * libmicrohttpd's percent-decoding of paths, except that %00 stays as it is: decoded, it
 * would end the C string, and "/v1/loss%00anything" would be routed as /v1/loss. Left
 * encoded, such a path matches no route (404).
 */
static size_t unescape(void *cls, struct MHD_Connection *c, char *text)
{
    char *w = text;
    (void)cls;
    (void)c;
    for (const char *p = text; *p; p++) {
        int hi, lo;
        if (*p == '%' && (hi = hex_digit(p[1])) >= 0 && (lo = hex_digit(p[2])) >= 0 && (hi || lo)) {
            *w++ = (char)(hi * 16 + lo);
            p += 2;
        } else {
            *w++ = *p;
        }
    }
    *w = '\0';
    return (size_t)(w - text);
}

/* At most this many libmicrohttpd messages a second: a flood of refused connections must not
 * flood the log too. */
#define LOG_PER_SECOND 10

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct mls_server *s = cls;
    char msg[512];
    /* libmicrohttpd says this of every TLS handshake that fails, whatever the cause: a client
     * that connected and closed (a TCP probe, the image's HEALTHCHECK, a port scanner) or spoke
     * plain HTTP. It names neither the peer nor the cause, so a line per connection tells an
     * operator nothing a counter does not: maskloss_tls_handshake_failures_total (nginx, too,
     * keeps these below its default log level). */
    if (strstr(fmt, "handshake message out of context")) {
        atomic_fetch_add_explicit(&s->tls_failed, 1, memory_order_relaxed);
        return;
    }
    uint64_t second = uv_hrtime() / 1000000000u;
    if (atomic_exchange_explicit(&s->log_window, second, memory_order_relaxed) != second) {
        uint64_t dropped = atomic_exchange_explicit(&s->log_count, 0, memory_order_relaxed);
        if (dropped > LOG_PER_SECOND)
            fprintf(stderr, "maskloss-server: libmicrohttpd: %llu more messages not shown\n",
                    (unsigned long long)(dropped - LOG_PER_SECOND));
    }
    if (atomic_fetch_add_explicit(&s->log_count, 1, memory_order_relaxed) >= LOG_PER_SECOND)
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    fprintf(stderr, "maskloss-server: libmicrohttpd: %s\n", msg);
}

int mls_http_start(struct mls_server *s, unsigned *port)
{
    struct addrinfo hints, *ai = NULL;
    char service[8];
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(service, sizeof(service), "%u", s->cfg.port);
    int gai = getaddrinfo(s->cfg.bind, service, &hints, &ai);
    if (gai) {
        fprintf(stderr, "maskloss-server: cannot use --bind '%s': %s\n", s->cfg.bind,
                gai_strerror(gai));
        return -1;
    }
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_DUAL_STACK; /* "::" takes IPv4 clients too */
    /* HTTPS through libmicrohttpd's GnuTLS: TLS 1.2 and 1.3 only (GnuTLS's NORMAL set of
     * ciphers, its versions narrowed), never plain HTTP on the same port. */
    struct MHD_OptionItem more[5], *o = more;
    if (s->tls_cert) {
        flags |= MHD_USE_TLS;
        *o++ = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert};
        *o++ = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key};
        *o++ = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0,
                                       (void *)"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"};
    }
    /* --http-threads: libmicrohttpd's pool of epoll threads sharing the listening socket.
     * Passed only above 1 (1 prints a warning), and at most the connection limit, which
     * libmicrohttpd shares out among them. */
    unsigned threads =
        s->cfg.http_threads < s->cfg.max_connections ? s->cfg.http_threads : s->cfg.max_connections;
    if (threads > 1)
        *o++ = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, (intptr_t)threads, NULL};
    *o = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    /* libmicrohttpd counts whole seconds; 0 would mean no timeout at all. */
    unsigned idle = (unsigned)ceil(s->cfg.connection_timeout);
    /* The logger first: libmicrohttpd uses its own for messages about earlier options.
     * The connection memory limit stays at libmicrohttpd's default of 32 KiB: the pool is
     * cleared for every request, and 128 KiB cost 16% of small-request throughput (measured
     * side by side); bodies are ours and do not live there. */
    s->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_CONNECTION_TIMEOUT, idle ? idle : 1u,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, mls_conn_notify,
        &s->conns, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024),
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_CONNECTION_LIMIT, s->cfg.max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, s->cfg.max_connections_per_ip,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL, MHD_OPTION_ARRAY, more, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->mhd) {
        fprintf(stderr, "maskloss-server: cannot listen on %s port %u%s\n", s->cfg.bind,
                s->cfg.port,
                s->tls_cert ? " with --tls-cert and --tls-key (a certificate and key that do "
                              "not parse or do not match say so above)"
                            : "");
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->mhd, MHD_DAEMON_INFO_BIND_PORT);
    *port = info && info->port ? info->port : s->cfg.port;
    return 0;
}
