/*
 * maskloss-server -- the maskloss JSON protocol over HTTP.
 *
 * Threads: libmicrohttpd's epoll thread does all HTTP I/O (http.c); a fixed pool of
 * workers decodes, computes and encodes (pool.c); one writer thread commits the monitors'
 * changes to their state, several per transaction (writer.c); this main thread runs a libuv
 * loop that owns signals and the drain (which also waits for the writer's pending changes). On
 * SIGTERM or SIGINT:
 *   1. /readyz turns 503 and new requests get 503 (draining) with Connection: close;
 *   2. once no accepted request is queued or computing, the listening socket is closed
 *      to new connections (quiesce) and the requests still being sent finish;
 *   3. the daemon stops; connections closed with requests behind their last answer linger
 *      until the client has closed its side (at most MLS_LINGER_SECONDS), so that it reads
 *      the answer; the workers are joined, and the process exits 0.
 * Past --drain-timeout, queued requests are answered 503 instead of computed.
 * SIGHUP reads --auth-file again (auth.h); without it, it is logged and changes nothing.
 */
/* malloc_trim (glibc) is declared for _DEFAULT_SOURCE only. */
#define _DEFAULT_SOURCE 1
#include <arpa/inet.h>
#include <malloc.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "readfile.h"
#include "server.h"

/* Seconds a job may keep running past the drain timeout before we give up on it. */
#define HARD_GRACE_SECONDS 5.0

struct app {
    struct mls_server srv;
    uv_loop_t loop;
    uv_signal_t sigterm, sigint, sighup;
    uv_timer_t tick;
    uv_timer_t trim;      /* gives freed memory back to the system */
    uint64_t drain_start; /* uv_hrtime() of the signal */
    uint64_t last_sighup; /* uv_hrtime() of the last SIGHUP logged */
    int quiesced;
    int cancelled;
    uint64_t settling; /* uv_hrtime() since when nothing was in flight; 0 before */
    uint64_t stopped;  /* uv_hrtime() when the daemon stopped; 0 before */
    MHD_socket listen_fd;
};

static double since(uint64_t t)
{
    return (double)(uv_hrtime() - t) * 1e-9;
}

static void close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* The signals the server handles. Only the main thread (the loop's) takes them: the other
 * threads start with them blocked, and the main thread blocks them again before its handles
 * close (see stop()). */
static void signals_mask(int how)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(how, &set, NULL);
}

/* Stops libmicrohttpd: every connection closes, the lingering ones through conn.c. */
static void stop_daemon(struct app *a)
{
    struct mls_server *s = &a->srv;
    int64_t left = atomic_load(&s->metrics.in_flight);
    MHD_stop_daemon(s->mhd);
    s->mhd = NULL;
    if (a->listen_fd != MHD_INVALID_SOCKET)
        close(a->listen_fd); /* only after MHD_stop_daemon, as its documentation asks */
    if (left > 0)
        fprintf(stderr,
                "maskloss-server: drain timeout: closed %lld connection(s) still sending or "
                "receiving a request that was never accepted\n",
                (long long)left);
    a->stopped = uv_hrtime();
}

/* The end: the last lingering sockets close, then the loop's handles. */
static void stop(struct app *a)
{
    struct mls_server *s = &a->srv;
    fprintf(stderr, "maskloss-server: stopped after draining for %.3f s\n", since(a->drain_start));
    /* Closing the signal handles restores the default actions: a late SIGTERM would kill
     * the process during its last cleanup and turn a clean exit into a failed one. Blocked
     * in every thread from here, signals then find them ignored. */
    signals_mask(SIG_BLOCK);
    mls_conns_close(&s->conns);
    uv_walk(&a->loop, close_handle, NULL);
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
}

static void on_tick(uv_timer_t *t)
{
    struct app *a = t->data;
    struct mls_server *s = &a->srv;
    double elapsed = since(a->drain_start);
    /* Jobs: computing or queued, and monitor changes waiting for their commit. */
    unsigned jobs = mls_pool_in_flight(&s->pool) + mls_writer_pending(&s->writer);

    if (!a->quiesced) {
        if (jobs == 0) {
            /* Every accepted job was answered (and no connection is suspended, so stopping
             * the daemon later is safe). Stop accepting connections. */
            a->listen_fd = MHD_quiesce_daemon(s->mhd);
            /* Refuse new connections now (and reset those waiting in the backlog, which
             * libmicrohttpd will not accept any more) rather than leave them waiting for the
             * exit. Linux stops a listening socket on shutdown(2); it is closed after
             * MHD_stop_daemon, as libmicrohttpd asks. */
            if (a->listen_fd != MHD_INVALID_SOCKET)
                shutdown(a->listen_fd, SHUT_RDWR);
            a->quiesced = 1;
        } else if (elapsed > s->cfg.drain_timeout && !a->cancelled) {
            fprintf(stderr,
                    "maskloss-server: drain timeout of %g s passed with %u request(s) in "
                    "flight: queued ones are answered 503\n",
                    s->cfg.drain_timeout, jobs);
            mls_pool_cancel(&s->pool);
            a->cancelled = 1;
        } else if (elapsed > s->cfg.drain_timeout + HARD_GRACE_SECONDS) {
            /* A job is still computing. libmicrohttpd cannot be stopped with a suspended
             * connection, and the job cannot be interrupted: leave without it. */
            fprintf(stderr,
                    "maskloss-server: %u request(s) still computing %g s after the drain "
                    "timeout; exiting without answering them\n",
                    jobs, HARD_GRACE_SECONDS);
            _exit(1);
        }
        if (!a->quiesced)
            return;
    }
    if (!a->stopped) {
        /* Nothing in flight: the daemon may stop once the answers written to the sockets
         * have reached their clients and no request waits unread (a pipelined one is then
         * read and answered 503 first), at most MLS_LINGER_SECONDS. libmicrohttpd's stop
         * shuts every socket down at once, and a close with unread data resets the
         * connection and drops what the client has not received yet. */
        int idle = atomic_load(&s->metrics.in_flight) == 0;
        if (!idle)
            a->settling = 0;
        else if (!a->settling)
            a->settling = uv_hrtime();
        if (elapsed > s->cfg.drain_timeout ||
            (idle && (!mls_conns_in_transit(&s->conns) || since(a->settling) > MLS_LINGER_SECONDS)))
            stop_daemon(a);
        return;
    }
    /* A connection closed with requests behind its last answer lingers: closed now, with
     * what the client still sends unread, it would be reset, and the kernel would drop the
     * part of the answer the client has not received yet (libmicrohttpd counts an answer
     * as sent once the socket took it). */
    if (!mls_conns_lingering(&s->conns) || since(a->stopped) > MLS_LINGER_SECONDS)
        stop(a);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct app *a = h->data;
    struct mls_server *s = &a->srv;
    if (signum == SIGHUP && s->auth.on) {
        /* The tokens again; connections and requests in flight go on (a request is checked
         * against the table of its headers' time). */
        char err[512];
        size_t n;
        if (mls_auth_reload(&s->auth, &n, err, sizeof(err)))
            fprintf(stderr, "maskloss-server: SIGHUP: %s; the tokens read before are kept\n", err);
        else
            fprintf(stderr, "maskloss-server: SIGHUP: %zu token(s) from %s\n", n, s->cfg.auth_file);
        return;
    }
    if (signum == SIGHUP) {
        /* Operators send it by habit (or a terminal closes): it must not stop the server.
         * Logged once a second at most: a flood of them must not flood the log. */
        uint64_t now = uv_hrtime();
        if (!a->last_sighup || now - a->last_sighup >= 1000000000u) {
            a->last_sighup = now;
            fprintf(stderr, "maskloss-server: SIGHUP: nothing to reload; still serving\n");
        }
        return;
    }
    const char *name = signum == SIGTERM ? "SIGTERM" : "SIGINT";
    if (atomic_load(&s->state) == MLS_DRAINING) {
        fprintf(stderr, "maskloss-server: %s again: already draining (%.1f s of %g s)\n", name,
                since(a->drain_start), s->cfg.drain_timeout);
        return;
    }
    atomic_store(&s->state, MLS_DRAINING);
    mls_pool_close(&s->pool);
    a->drain_start = uv_hrtime();
    fprintf(stderr, "maskloss-server: %s: draining %u accepted request(s), timeout %g s\n", name,
            mls_pool_in_flight(&s->pool), s->cfg.drain_timeout);
    uv_timer_start(&a->tick, on_tick, 0, 10);
}

/*
 * Every connection is a descriptor: raise the soft open-files limit to the hard one, and
 * lower --max-connections to what fits (with room for the listening socket, the loop, the
 * workers' files and the lingering sockets), saying so. Returns the descriptors kept for
 * lingering sockets.
 */
static unsigned fit_open_files(struct mls_config *c)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl))
        return MLS_LINGER_MAX;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t cur = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl))
            rl.rlim_cur = cur;
    }
    /* Lingering sockets take up to MLS_LINGER_MAX descriptors, or an eighth of a small limit. */
    rlim_t linger = rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur / 8 < MLS_LINGER_MAX
                        ? rl.rlim_cur / 8
                        : MLS_LINGER_MAX;
    rlim_t reserve = 64 + linger;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)c->max_connections + reserve) {
        unsigned fit = rl.rlim_cur > reserve + 16 ? (unsigned)(rl.rlim_cur - reserve) : 16u;
        fprintf(stderr,
                "maskloss-server: --max-connections %u lowered to %u to fit the open-files "
                "limit of %llu (ulimit -n)\n",
                c->max_connections, fit, (unsigned long long)rl.rlim_cur);
        c->max_connections = fit;
    }
    /* One address must not be able to take every connection. */
    if (c->max_connections_per_ip > c->max_connections / 2) {
        unsigned per = c->max_connections / 2 ? c->max_connections / 2 : 1;
        fprintf(stderr,
                "maskloss-server: --max-connections-per-ip %u lowered to %u, half of "
                "--max-connections\n",
                c->max_connections_per_ip, per);
        c->max_connections_per_ip = per;
    }
    return (unsigned)linger;
}

/*
 * glibc keeps what large requests freed in its arenas (one per worker) and returns only the
 * top of each heap: the resident size would creep up to the worst mix of requests seen. A
 * trim every few seconds hands the free pages back, so that RSS follows the requests in
 * flight (the soak's flatness check).
 */
#define TRIM_MS 5000

static void on_trim(uv_timer_t *t)
{
    (void)t;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

static void close_state(struct mls_server *s)
{
    mls_writer_stop(&s->writer);
    if (s->store)
        s->store->vt->close(s->store);
    s->store = NULL;
    mls_registry_free(&s->monitors);
}

static int render_catalogue(struct mls_server *s)
{
    struct mlp_buf b = {0};
    mlp_catalogue_write(&b);
    if (b.failed) {
        free(b.data);
        return -1;
    }
    s->catalogue = b.data;
    s->catalogue_len = b.len;
    return 0;
}

/* The monitors: the store opened and loaded into memory, and the writer thread started. */
static int open_state(struct mls_server *s)
{
    char err[512];
    struct mls_monitor_limits lim = {s->cfg.max_monitors, s->cfg.max_classes,
                                     s->cfg.max_slice_values, s->cfg.rollup_after};
    if (mls_registry_init(&s->monitors, &lim)) {
        fprintf(stderr, "maskloss-server: out of memory\n");
        return -1;
    }
    char shown[sizeof(s->cfg.state)];
    mls_store_redact(s->cfg.state, shown, sizeof(shown));
    int rc;
    if (mls_store_is_pg(s->cfg.state)) {
        /* A database starting beside the server (compose, a pod's restart) gets a while. */
        for (unsigned attempt = 0;; attempt++) {
            rc = mls_store_open_pg(s->cfg.state, s->cfg.state_timeout, &s->store, err, sizeof(err));
            if (!rc || attempt >= s->cfg.state_wait)
                break;
            fprintf(stderr,
                    "maskloss-server: --state %s: %s; trying again in 1 s (--state-wait %u)\n",
                    shown, err, s->cfg.state_wait);
            sleep(1);
        }
    } else {
        rc = mls_store_open_sqlite(s->cfg.state, s->cfg.state_cache, s->cfg.state_mmap, &s->store,
                                   err, sizeof(err));
    }
    if (rc || s->store->vt->load(s->store, &s->monitors, err, sizeof(err))) {
        fprintf(stderr, "maskloss-server: --state %s: %s\n", shown, err);
        close_state(s);
        return -1;
    }
    if (mls_writer_start(&s->writer, s->store, &s->monitors)) {
        fprintf(stderr, "maskloss-server: cannot start the monitors' writer thread\n");
        close_state(s);
        return -1;
    }
    return 0;
}

/* Whether the address to bind is on loopback only (a host name other than localhost is not
 * assumed to be). */
static int loopback(const char *bind)
{
    struct in_addr v4;
    struct in6_addr v6;
    if (!strcmp(bind, "localhost"))
        return 1;
    if (inet_pton(AF_INET, bind, &v4) == 1)
        return (ntohl(v4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, bind, &v6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&v6) || (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
    return 0;
}

/* The tokens (--auth-file), or the rule without them: loopback only, unless told. */
static int open_auth(struct mls_server *s)
{
    if (s->cfg.auth_file[0]) {
        char err[600];
        if (mls_auth_open(&s->auth, s->cfg.auth_file, err, sizeof(err))) {
            fprintf(stderr, "maskloss-server: --auth-file: %s\n", err);
            return -1;
        }
        fprintf(stderr, "maskloss-server: %zu token(s) from %s\n", s->auth.count, s->cfg.auth_file);
        return 0;
    }
    if (loopback(s->cfg.bind))
        return 0;
    if (!s->cfg.insecure_no_auth) {
        fprintf(stderr,
                "maskloss-server: --bind %s is reachable from other machines, and without "
                "--auth-file anyone who reaches it may evaluate, write and delete monitors: give "
                "--auth-file PATH (maskloss token new NAME --scopes ... makes one), bind "
                "127.0.0.1, or accept it with --insecure-no-auth\n",
                s->cfg.bind);
        return -1;
    }
    fprintf(stderr,
            "maskloss-server: WARNING: --insecure-no-auth: listening on %s with no "
            "authentication; anyone who reaches the port may do anything, in clear text\n",
            s->cfg.bind);
    return 0;
}

/* A PEM file of at most 1 MiB, NUL-terminated (libmicrohttpd takes it from memory): the
 * text, or NULL after printing why. */
static char *read_pem(const char *flag, const char *path)
{
    size_t len;
    const char *why;
    char *text = mls_read_file(path, 1u << 20, &len, &why);
    if (text && !strstr(text, "-----BEGIN "))
        why = "not PEM (no -----BEGIN line)";
    else if (text)
        return text;
    fprintf(stderr, "maskloss-server: %s %s (at most 1 MiB): %s\n", flag, path, why);
    free(text);
    return NULL;
}

/* The key's copy is wiped before it is freed. */
static void free_tls(struct mls_server *s)
{
    if (s->tls_key) {
        volatile char *k = s->tls_key;
        for (size_t i = 0; k[i]; i++)
            k[i] = 0;
    }
    free(s->tls_key);
    free(s->tls_cert);
    s->tls_key = s->tls_cert = NULL;
}

static int open_tls(struct mls_server *s)
{
    if (!s->cfg.tls_cert[0] && !s->cfg.tls_key[0])
        return 0;
    if (!s->cfg.tls_cert[0] || !s->cfg.tls_key[0]) {
        fprintf(stderr, "maskloss-server: --tls-cert and --tls-key go together (%s is missing)\n",
                s->cfg.tls_cert[0] ? "--tls-key" : "--tls-cert");
        return -1;
    }
    if (!(s->tls_cert = read_pem("--tls-cert", s->cfg.tls_cert)) ||
        !(s->tls_key = read_pem("--tls-key", s->cfg.tls_key))) {
        free_tls(s);
        return -1;
    }
    return 0;
}

/* The quotas (quota.h): the share of the queue defaults to half of it with tokens, where
 * clients are people and jobs that must not starve each other; without tokens, on a
 * developer's machine, every client is the same person. */
static int open_quota(struct mls_server *s)
{
    const struct mls_config *c = &s->cfg;
    if (c->rate_burst && c->rate_limit <= 0) {
        fprintf(stderr, "maskloss-server: --rate-burst needs --rate-limit (a bucket that never "
                        "refills would stop each client after its first requests)\n");
        return 64;
    }
    unsigned share = c->queue_share;
    if (!share && s->auth.on)
        share = c->queue_depth / 2 ? c->queue_depth / 2 : 1;
    double burst = c->rate_burst ? c->rate_burst : ceil(c->rate_limit);
    if (mls_quota_init(&s->quota, c->rate_limit, burst < 1 ? 1 : burst, share,
                       (uint32_t)uv_hrtime() * 2654435761u ^ (uint32_t)getpid())) {
        fprintf(stderr, "maskloss-server: out of memory\n");
        return 1;
    }
    return 0;
}

/* Releases what open_auth, open_tls and open_quota took. */
static void close_access(struct mls_server *s)
{
    mls_auth_close(&s->auth);
    free_tls(s);
    mls_quota_destroy(&s->quota);
}

int main(int argc, char **argv)
{
    static struct app app; /* large; its address is handed to every thread */
    struct app *a = &app;
    struct mls_server *s = &a->srv;
    int rc;
    unsigned port = 0;

    switch (mls_config_parse(&s->cfg, argc, argv, stdout, stderr)) {
    case MLS_CONFIG_EXIT:
        return 0;
    case MLS_CONFIG_ERROR:
        return 64;
    default:
        break;
    }
#ifdef __GLIBC__
    /* Bodies, tensors and answers of large requests come and go: a fixed mmap threshold
     * keeps each in its own mapping, returned whole when freed. glibc's default threshold
     * rises after the first large free, and later large buffers then stay in the arenas
     * (the 10-minute soak saw RSS settle 8% above its first minute). */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    /* Below it, the same buffers come and go at every request (the writer's, a few hundred
     * kB an op): an arena keeps up to this much free at its top instead of handing it back
     * to the kernel at each free and faulting it in, zeroed, at the next request (the late
     * labels' writer spent 5 % of its time so). */
    mallopt(M_TRIM_THRESHOLD, 16 * 1024 * 1024);
#endif
    /* Writes to a client that went away must fail with EPIPE, not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    /* A write past the file-size limit (ulimit -f, systemd's LimitFSIZE=) must fail with EFBIG,
     * which the monitors' store answers 503 state_unavailable, not kill the process. */
    signal(SIGXFSZ, SIG_IGN);
    /* jansson seeds its hash function on first use; do it before any thread exists. Its
     * allocator reports failures to mlp_parse (mlp.h). */
    json_set_alloc_funcs(mlp_json_malloc, free);
    json_object_seed(0);
    if (open_auth(s))
        return 64;
    if (open_tls(s)) {
        mls_auth_close(&s->auth);
        return 64;
    }
    if ((rc = open_quota(s))) {
        close_access(s);
        return rc;
    }
    a->listen_fd = MHD_INVALID_SOCKET;
    atomic_init(&s->state, MLS_STARTING);

    if (mls_metrics_init(&s->metrics) || render_catalogue(s)) {
        fprintf(stderr, "maskloss-server: out of memory\n");
        close_access(s);
        return 1;
    }
    signals_mask(SIG_BLOCK); /* inherited by the workers and libmicrohttpd's thread */
    if (open_state(s))
        goto fail_metrics;
    if ((rc = mls_pool_init(&s->pool, s->cfg.workers, s->cfg.queue_depth, mls_http_run_job, s))) {
        fprintf(stderr, "maskloss-server: cannot start %u workers: %s\n", s->cfg.workers,
                uv_strerror(rc));
        goto fail_metrics;
    }
    if ((rc = uv_loop_init(&a->loop))) {
        fprintf(stderr, "maskloss-server: uv_loop_init: %s\n", uv_strerror(rc));
        goto fail_pool;
    }
    uv_signal_init(&a->loop, &a->sigterm);
    uv_signal_init(&a->loop, &a->sigint);
    uv_signal_init(&a->loop, &a->sighup);
    uv_timer_init(&a->loop, &a->tick);
    uv_timer_init(&a->loop, &a->trim);
    uv_timer_start(&a->trim, on_trim, TRIM_MS, TRIM_MS);
    uv_unref((uv_handle_t *)&a->trim);
    a->sigterm.data = a->sigint.data = a->sighup.data = a->tick.data = a;
    uv_signal_start(&a->sigterm, on_signal, SIGTERM);
    uv_signal_start(&a->sigint, on_signal, SIGINT);
    uv_signal_start(&a->sighup, on_signal, SIGHUP);
    unsigned linger_max = fit_open_files(&s->cfg);
    if ((rc = mls_conns_init(&s->conns, &a->loop, s->cfg.header_timeout, s->cfg.connection_timeout,
                             MLS_SWEEP_MS, linger_max))) {
        fprintf(stderr, "maskloss-server: cannot start the connection sweep: %s\n",
                uv_strerror(rc));
        goto fail_loop;
    }

    if (mls_http_start(s, &port))
        goto fail_loop;
    signals_mask(SIG_UNBLOCK);
    atomic_store(&s->state, MLS_READY);
    int v6 = strchr(s->cfg.bind, ':') != NULL;
    printf("maskloss-server %s listening on %s://%s%s%s:%u (%u workers, queue depth %u)\n",
           ML_VERSION, s->tls_cert ? "https" : "http", v6 ? "[" : "", s->cfg.bind, v6 ? "]" : "",
           port, s->cfg.workers, s->cfg.queue_depth);
    fflush(stdout);

    uv_run(&a->loop, UV_RUN_DEFAULT);
    uv_loop_close(&a->loop);
    mls_conns_destroy(&s->conns);
    mls_pool_destroy(&s->pool);
    close_state(s);
    mls_metrics_free(&s->metrics);
    close_access(s);
    free(s->catalogue);
    return 0;

fail_loop:
    if (s->conns.loop) {
        mls_conns_close(&s->conns);
        uv_walk(&a->loop, close_handle, NULL);
        uv_run(&a->loop, UV_RUN_DEFAULT);
        mls_conns_destroy(&s->conns);
    }
    uv_walk(&a->loop, close_handle, NULL);
    uv_run(&a->loop, UV_RUN_DEFAULT);
    uv_loop_close(&a->loop);
fail_pool:
    mls_pool_destroy(&s->pool);
    close_state(s);
fail_metrics:
    mls_metrics_free(&s->metrics);
    close_access(s);
    free(s->catalogue);
    return 1;
}
