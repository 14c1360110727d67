/*
 * fuzz_http.c -- the HTTP front end: raw bytes through libmicrohttpd and the server's real
 * handler (routing, header checks, framing, limits, the budget, the worker pool, the
 * answers), in this process.
 *
 * The server starts once, on a free loopback port, with small limits (so that no input can
 * make it allocate much) and timeouts of 1 s: libmicrohttpd does not notice a client's
 * half-close in the middle of a body, so such inputs end at --connection-timeout. Each input is
 * sent on a new connection, which then half-closes, as a client may after a complete request.
 * Invariants:
 *   - the server closes the connection within a few seconds, whatever was sent (no hang);
 *   - what it sent is a sequence of HTTP/1.1 answers, each with a status of the server's
 *     own, never 500, or ends with libmicrohttpd's refusal of malformed HTTP (400, 413, 414,
 *     431, 505, text/html);
 *   - an application/json answer is one valid JSON document; an error among them is an
 *     error object whose code is a known one (errors.h, the protocol's table).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "errors.h"
#include "fuzz.h"
#include "server.h"

/* How long a connection may stay open after the input was sent: more than --header-timeout
 * and --connection-timeout below, with room for a loaded machine. */
#define CLOSE_WITHIN_MS 8000

static struct mls_server srv;
static uv_loop_t loop;
static uv_timer_t keep_alive; /* keeps the loop running: the sweep's own handles do not */
static uv_thread_t loop_thread;
static unsigned port;

static void on_keep_alive(uv_timer_t *t)
{
    (void)t;
}

/* The loop of main.c: the header deadline, the sweep of half-closed connections and the
 * lingering closes run on it. */
static void run_loop(void *arg)
{
    (void)arg;
    uv_run(&loop, UV_RUN_DEFAULT);
}

static void start(void)
{
    char *argv[] = {"fuzz_http", "--port",
                    "0",         "--workers",
                    "1",         "--queue-depth",
                    "8",         "--connection-timeout",
                    "1",         "--header-timeout",
                    "1",         "--max-body-bytes",
                    "65536",     "--max-elements",
                    "4096",      "--max-inflight-bytes",
                    "8M",        "--max-connections-per-ip",
                    "0",         "--state",
                    ":memory:",  "--max-monitors",
                    "4",         "--max-slice-values",
                    "4",         "--max-classes",
                    "16",        NULL};
    int argc = (int)(sizeof(argv) / sizeof(argv[0])) - 1;
    struct mlp_buf b = {0};
    signal(SIGPIPE, SIG_IGN);
    json_set_alloc_funcs(mlp_json_malloc, free);
    json_object_seed(0);
    FUZZ_CHECK(mls_config_parse(&srv.cfg, argc, argv, stdout, stderr) == MLS_CONFIG_OK, "config");
    FUZZ_CHECK(mls_metrics_init(&srv.metrics) == 0, "metrics");
    mlp_catalogue_write(&b);
    FUZZ_CHECK(!b.failed, "catalogue");
    srv.catalogue = b.data;
    srv.catalogue_len = b.len;
    atomic_init(&srv.state, MLS_STARTING);
    FUZZ_CHECK(
        mls_pool_init(&srv.pool, srv.cfg.workers, srv.cfg.queue_depth, mls_http_run_job, &srv) == 0,
        "pool");
    /* The monitors, as main.c's open_state: a store in memory (nothing outlives the process)
     * and the writer thread that answers their changes; small limits bound what inputs can
     * accumulate over a run. */
    struct mls_monitor_limits lim = {srv.cfg.max_monitors, srv.cfg.max_classes,
                                     srv.cfg.max_slice_values, srv.cfg.rollup_after};
    char err[512];
    FUZZ_CHECK(mls_registry_init(&srv.monitors, &lim) == 0, "registry");
    FUZZ_CHECK(mls_store_open_sqlite(srv.cfg.state, 1 << 20, 0, &srv.store, err, sizeof(err)) ==
                       0 &&
                   srv.store->vt->load(srv.store, &srv.monitors, err, sizeof(err)) == 0,
               "state: %s", err);
    FUZZ_CHECK(mls_writer_start(&srv.writer, srv.store, &srv.monitors) == 0, "writer");
    FUZZ_CHECK(uv_loop_init(&loop) == 0, "loop");
    FUZZ_CHECK(mls_conns_init(&srv.conns, &loop, srv.cfg.header_timeout, srv.cfg.connection_timeout,
                              2, MLS_LINGER_MAX) == 0,
               "conns");
    uv_timer_init(&loop, &keep_alive);
    uv_timer_start(&keep_alive, on_keep_alive, 1000, 1000);
    FUZZ_CHECK(uv_thread_create(&loop_thread, run_loop, NULL) == 0, "loop thread");
    FUZZ_CHECK(mls_http_start(&srv, &port) == 0, "http start");
    atomic_store(&srv.state, MLS_READY);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Sends the input and half-closes; reads until the server closes. Returns the bytes read
 * (malloc'd, *n of them). */
static char *exchange(const uint8_t *data, size_t size, size_t *n)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* libFuzzer's timer interrupts system calls: a connect interrupted goes on in the
     * background, and is waited for. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        FUZZ_CHECK(errno == EINTR, "connect: %s", strerror(errno));
        struct pollfd pw = {fd, POLLOUT, 0};
        while (poll(&pw, 1, CLOSE_WITHIN_MS) < 0 && errno == EINTR)
            ;
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        FUZZ_CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0,
                   "connect: %s", strerror(soerr));
    }
    size_t cap = 65536, len = 0, sent = 0;
    char *out = malloc(cap);
    FUZZ_CHECK(out != NULL, "out of memory");
    uint64_t deadline = now_ms() + CLOSE_WITHIN_MS;
    int wr_open = 1;
    for (;;) {
        if (wr_open && sent == size) {
            shutdown(fd, SHUT_WR);
            wr_open = 0;
        }
        struct pollfd p = {fd, (short)(POLLIN | (wr_open ? POLLOUT : 0)), 0};
        uint64_t t = now_ms();
        FUZZ_CHECK(t < deadline,
                   "the server kept the connection open %d ms after the input "
                   "(%zu of %zu bytes sent, %zu received)",
                   CLOSE_WITHIN_MS, sent, size, len);
        int rc = poll(&p, 1, (int)(deadline - t));
        if (rc < 0 && errno == EINTR)
            continue;
        FUZZ_CHECK(rc >= 0, "poll: %s", strerror(errno));
        if (p.revents & POLLOUT) {
            ssize_t w = send(fd, data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                wr_open = 0; /* the server closed: it may have answered early */
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            if (len == cap) {
                char *q = realloc(out, cap *= 2);
                FUZZ_CHECK(q != NULL, "out of memory");
                out = q;
            }
            ssize_t r = recv(fd, out + len, cap - len, MSG_DONTWAIT);
            if (r > 0)
                len += (size_t)r;
            else if (r == 0 || (errno != EAGAIN && errno != EINTR))
                break; /* closed (or reset: the answers before it were read) */
        }
    }
    close(fd);
    *n = len;
    return out;
}

static const char *find(const char *s, size_t n, const char *what)
{
    size_t w = strlen(what);
    for (size_t i = 0; i + w <= n; i++)
        if (!memcmp(s + i, what, w))
            return s + i;
    return NULL;
}

/* The value of header `name` in head[0..n) (NULL when absent), copied to buf. */
static const char *header(const char *head, size_t n, const char *name, char *buf, size_t size)
{
    size_t nl = strlen(name);
    for (const char *p = head; p && p < head + n;) {
        const char *eol = find(p, (size_t)(head + n - p), "\r\n");
        const char *end = eol ? eol : head + n;
        if ((size_t)(end - p) > nl && p[nl] == ':' && !strncasecmp(p, name, nl)) {
            const char *v = p + nl + 1;
            while (v < end && *v == ' ')
                v++;
            size_t vl = (size_t)(end - v) < size - 1 ? (size_t)(end - v) : size - 1;
            memcpy(buf, v, vl);
            buf[vl] = '\0';
            return buf;
        }
        p = eol ? eol + 2 : NULL;
    }
    return NULL;
}

/* A status the server answers with: 100 Continue, 200, 201 and 204 (a monitor created,
 * deleted), 304 (a status page's file the client has), the protocol's failures (400, 422 and
 * the limits' codes) and the server's own error table. */
static int server_status(unsigned st)
{
    if (st == 100 || st == 200 || st == 201 || st == 204 || st == 304 || st == 400 || st == 422)
        return 1;
    for (int e = 0; e < MLS_ERR_COUNT; e++)
        if (mls_error_status((enum mls_error)e) == st)
            return 1;
    return 0;
}

static int mhd_status(unsigned st)
{
    return st == 400 || st == 413 || st == 414 || st == 431 || st == 505;
}

/*
 * Checks the answers in out[0..n). head_first: the first request was HEAD; head_later: a
 * later one may be. An answer to HEAD has a Content-Length but no body, and which answer
 * belongs to a HEAD cannot be told from the stream: then only the answers up to the first
 * that may be one are checked.
 */
static void check_answers(const char *out, size_t n, int head_first, int head_later)
{
    const char *p = out, *end = out + n;
    for (int k = 0; p < end; k++) {
        FUZZ_CHECK(end - p >= 12 && !memcmp(p, "HTTP/1.1 ", 9), "answer %d is not HTTP/1.1: %.40s",
                   k, p);
        unsigned st = (unsigned)atoi(p + 9);
        const char *hend = find(p, (size_t)(end - p), "\r\n\r\n");
        if (!hend)
            return; /* cut by a reset after a complete earlier answer: nothing more to read */
        size_t hlen = (size_t)(hend - p);
        char ct[128] = "", clen[32] = "";
        int json =
            header(p, hlen, "Content-Type", ct, sizeof(ct)) && !strncmp(ct, "application/json", 16);
        FUZZ_CHECK(server_status(st) || (mhd_status(st) && !json), "status %u (%s)", st, ct);
        if (st == 100) {
            p = hend + 4;
            continue;
        }
        if (!json && mhd_status(st))
            /* libmicrohttpd's own refusal of malformed HTTP, and the connection's end. Its
             * 0.9.75 sends the status line and headers twice when it refuses an unparsable or
             * too large Content-Length (seen with this target): what follows is not checked. */
            return;
        size_t body = 0;
        if (header(p, hlen, "Content-Length", clen, sizeof(clen)))
            body = (size_t)strtoull(clen, NULL, 10);
        if (k == 0 && head_first)
            body = 0;
        if (k > 0 && head_later)
            return;
        const char *b = hend + 4;
        if ((size_t)(end - b) < body)
            return; /* cut short by the close: only complete answers are checked */
        if (json && body) {
            json_t *doc = fuzz_parse_json(b, body, "an answer");
            json_t *code = json_object_get(doc, "code");
            if (st >= 400 || code) {
                FUZZ_CHECK(json_is_string(code), "error answer %u without a code", st);
                FUZZ_CHECK(mls_error_code_known(json_string_value(code)),
                           "unknown code '%s' (status %u)", json_string_value(code), st);
                FUZZ_CHECK(json_is_string(json_object_get(doc, "error")), "no message");
                FUZZ_CHECK(json_is_string(json_object_get(doc, "field")), "no field");
            }
            if (st == 503)
                FUZZ_CHECK(header(p, hlen, "Retry-After", clen, sizeof(clen)),
                           "503 without Retry-After");
            json_decref(doc);
        }
        p = b + body;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int started;
    if (!started) {
        start();
        started = 1;
    }
    size_t n;
    char *out = exchange(data, size, &n);
    int head_later = 0;
    for (size_t i = 1; i + 5 <= size && !head_later; i++)
        head_later = !memcmp(data + i, "HEAD ", 5);
    check_answers(out, n, size >= 5 && !memcmp(data, "HEAD ", 5), head_later);
    free(out);
    return 0;
}
