/*
 * config.c -- flags and environment variables of maskloss-server.
 *
 * One table drives parsing, the environment and --help, so the three cannot drift apart.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#include "config.h"
#include "maskloss.h"
#include "monitor.h"
#include "origin.h"

/* OPT_STRING's and OPT_ORIGINS's max is the size of their field; OPT_DURATION is whole seconds from
 * "90s", "5m", "48h", "30d" (into a long long). */
enum opt_kind {
    OPT_STRING,
    OPT_UINT,
    OPT_BYTES,
    OPT_LLONG,
    OPT_SECONDS,
    OPT_NUMBER, /* a double in [min, max] */
    OPT_FLAG,
    OPT_DURATION,
    OPT_ORIGINS /* repeatable: each value appended to a newline-separated list (origin.h) */
};

struct opt {
    const char *flag; /* without the leading "--" */
    const char *env;
    enum opt_kind kind;
    size_t offset;
    double min, max; /* accepted range of numeric values */
    const char *arg; /* placeholder in --help */
    const char *help;
};

#define OFF(f) offsetof(struct mls_config, f)
#define SIZE(f) sizeof(((struct mls_config *)0)->f)

static const struct opt opts[] = {
    {"bind", "MASKLOSS_BIND", OPT_STRING, OFF(bind), 0, SIZE(bind), "ADDR",
     "address to listen on; 0.0.0.0 or :: for every interface (default 127.0.0.1)"},
    {"port", "MASKLOSS_PORT", OPT_UINT, OFF(port), 0, 65535, "N",
     "TCP port; 0 picks a free one and prints it (default 8080)"},
    {"workers", "MASKLOSS_WORKERS", OPT_UINT, OFF(workers), 1, 1024, "N",
     "compute threads (default: the number of online cores)"},
    {"http-threads", "MASKLOSS_HTTP_THREADS", OPT_UINT, OFF(http_threads), 1, 64, "N",
     "HTTP threads, each answering the small requests it reads (default: online cores, at most 4)"},
    {"queue-depth", "MASKLOSS_QUEUE_DEPTH", OPT_UINT, OFF(queue_depth), 1, 1000000, "N",
     "requests that may wait for a worker; beyond it 503 + Retry-After (default 256)"},
    {"max-body-bytes", "MASKLOSS_MAX_BODY_BYTES", OPT_BYTES, OFF(max_body_bytes), 1, 1e15, "B",
     "largest request body, suffixes K, M, G allowed; beyond it 413 (default 64M)"},
    {"max-elements", "MASKLOSS_MAX_ELEMENTS", OPT_LLONG, OFF(max_elements), 0, 9e18, "E",
     "largest tensor in elements; beyond it 413 too_large; 0 = no limit (default 16777216)"},
    {"request-timeout", "MASKLOSS_REQUEST_TIMEOUT", OPT_SECONDS, OFF(request_timeout), 0.001, 1e6,
     "S",
     "seconds a request may wait in the queue; one that waited longer is answered 503 "
     "instead of computed (default 30)"},
    {"connection-timeout", "MASKLOSS_CONNECTION_TIMEOUT", OPT_SECONDS, OFF(connection_timeout),
     0.001, 1e6, "S",
     "seconds an idle connection is kept, and the longest time to receive one request's "
     "body; slower clients are cut off (default 60)"},
    {"drain-timeout", "MASKLOSS_DRAIN_TIMEOUT", OPT_SECONDS, OFF(drain_timeout), 0.001, 1e6, "S",
     "on SIGTERM/SIGINT, seconds to finish accepted requests before giving up on queued ones "
     "(default 30)"},
    {"access-log", "MASKLOSS_ACCESS_LOG", OPT_FLAG, OFF(access_log), 0, 1, NULL,
     "one JSON line per request on standard error (env: 1/0, true/false)"},
    {"max-connections", "MASKLOSS_MAX_CONNECTIONS", OPT_UINT, OFF(max_connections), 1, 1000000, "N",
     "open connections in all; more wait in the listen backlog (default 4096, lowered to "
     "fit the open-files limit)"},
    {"max-connections-per-ip", "MASKLOSS_MAX_CONNECTIONS_PER_IP", OPT_UINT,
     OFF(max_connections_per_ip), 0, 1000000, "N",
     "open connections from one client address; more are closed as they arrive; 0 = no "
     "limit (default 64)"},
    {"header-timeout", "MASKLOSS_HEADER_TIMEOUT", OPT_SECONDS, OFF(header_timeout), 0.001, 1e6, "S",
     "seconds from a connection's opening to the end of its first request's headers; a "
     "kept-alive connection has --connection-timeout from one answer to the next request's "
     "headers (default 10)"},
    {"max-inflight-bytes", "MASKLOSS_MAX_INFLIGHT_BYTES", OPT_BYTES, OFF(max_inflight_bytes), 1,
     1e18, "B",
     "memory the requests in flight may hold together: bodies and their decoding, counted "
     "from Content-Length before the body is read; a request that does not fit gets 503 + "
     "Retry-After (default: half the memory of the machine or its cgroup)"},
    {"max-inflight-bytes-per-ip", "MASKLOSS_MAX_INFLIGHT_BYTES_PER_IP", OPT_BYTES,
     OFF(max_inflight_bytes_per_ip), 1, 1e18, "B",
     "the part of --max-inflight-bytes the requests from one client address (an IPv6 /64) "
     "may hold together, so that one client cannot fill it with large bodies it never sends "
     "(default: half of --max-inflight-bytes)"},
    {"state", "MASKLOSS_STATE", OPT_STRING, OFF(state), 0, SIZE(state), "PATH|URL",
     "the monitors' SQLite file, created when absent; :memory: keeps nothing (default "
     "maskloss-state.db in the working directory); or a PostgreSQL database shared by replicas, "
     "postgresql://USER@HOST:PORT/DB or \"host=... dbname=...\" (password from PGPASSFILE, "
     "PGPASSWORD or the URL; the schema is created and migrated by the server)"},
    {"state-wait", "MASKLOSS_STATE_WAIT", OPT_UINT, OFF(state_wait), 0, 3600, "S",
     "seconds a PostgreSQL --state may take to answer at start (tried once a second; a database "
     "starting beside the server), after which the server exits 1 (default 30)"},
    {"state-timeout", "MASKLOSS_STATE_TIMEOUT", OPT_UINT, OFF(state_timeout), 1, 600, "S",
     "seconds a PostgreSQL --state may take to answer a call; past it the change is answered 503, "
     "/readyz turns 503 and the server reconnects (default 10)"},
    {"max-monitors", "MASKLOSS_MAX_MONITORS", OPT_UINT, OFF(max_monitors), 1, 1000000, "N",
     "monitors the server holds; creating one more is 422 limit_exceeded (default 1000)"},
    {"max-classes", "MASKLOSS_MAX_CLASSES", OPT_UINT, OFF(max_classes), 1, 1000000, "N",
     "classes of one monitor (default 4096)"},
    {"max-slice-values", "MASKLOSS_MAX_SLICE_VALUES", OPT_UINT, OFF(max_slice_values), 1, 1000000,
     "N",
     "distinct combinations of slice values of one monitor; an observation that would add "
     "one more is 422 limit_exceeded (default 1000)"},
    {"state-cache", "MASKLOSS_STATE_CACHE", OPT_BYTES, OFF(state_cache), 0, 1e13, "B",
     "SQLite's cache of pages of the state file, beyond the mapped part and for pages being "
     "written (default 64M)"},
    {"state-mmap", "MASKLOSS_STATE_MMAP", OPT_BYTES, OFF(state_mmap), 0, 1e13, "B",
     "bytes of the state file read through a memory map (at most SQLite's limit, 2G as "
     "Debian builds it; 0: none): stored predictions are read at random as their labels "
     "come, where the kernel caches them, without a system call or a copy (default 2G)"},
    {"auth-file", "MASKLOSS_AUTH_FILE", OPT_STRING, OFF(auth_file), 0, SIZE(auth_file), "PATH",
     "bearer tokens with scopes, one a line: '<sha-256 hex> <name> <scope>[,...]' (maskloss "
     "token new appends one); re-read on SIGHUP. Without it every request is allowed, and "
     "only a loopback address may be bound"},
    {"insecure-no-auth", "MASKLOSS_INSECURE_NO_AUTH", OPT_FLAG, OFF(insecure_no_auth), 0, 1, NULL,
     "bind a non-loopback address without --auth-file: anyone who reaches the port may do "
     "anything (env: 1/0, true/false)"},
    {"metrics-open", "MASKLOSS_METRICS_OPEN", OPT_FLAG, OFF(metrics_open), 0, 1, NULL,
     "with --auth-file, /metrics needs no token (env: 1/0, true/false)"},
    {"tls-cert", "MASKLOSS_TLS_CERT", OPT_STRING, OFF(tls_cert), 0, SIZE(tls_cert), "PATH",
     "serve HTTPS (TLS 1.2 and 1.3 only) with this PEM certificate, or chain, and --tls-key; "
     "the port then takes no plain HTTP"},
    {"tls-key", "MASKLOSS_TLS_KEY", OPT_STRING, OFF(tls_key), 0, SIZE(tls_key), "PATH",
     "the PEM private key of --tls-cert"},
    {"rate-limit", "MASKLOSS_RATE_LIMIT", OPT_NUMBER, OFF(rate_limit), 0, 1e9, "REQ/S",
     "requests a second one client may send on average: a token's name with --auth-file, a "
     "client address without; beyond it 429 too_many_requests + Retry-After, before the body "
     "is read (health probes and /metrics never count); 0 = no limit (default 0)"},
    {"rate-burst", "MASKLOSS_RATE_BURST", OPT_UINT, OFF(rate_burst), 0, 1000000000, "N",
     "requests one client may send at once above --rate-limit, after a pause (its token "
     "bucket's size); 0 = one second's worth, at least 1 (default 0)"},
    {"queue-share", "MASKLOSS_QUEUE_SHARE", OPT_UINT, OFF(queue_share), 0, 1000000, "N",
     "requests needing a worker (compute, monitors) one client may have in flight at once; "
     "one more is 429 too_many_requests, so that one client cannot fill the queue (default: "
     "half of --queue-depth with --auth-file, none without)"},
    {"cors-origin", "MASKLOSS_CORS_ORIGIN", OPT_ORIGINS, OFF(cors_origins), 0, SIZE(cors_origins),
     "ORIGIN",
     "let web pages of this origin (https://app.example.com, or * for any) call the server: "
     "answers CORS preflight OPTIONS and sets Access-Control-Allow-Origin for it; repeatable "
     "(env: origins separated by spaces or commas); none by default"},
    {"rollup-after", "MASKLOSS_ROLLUP_AFTER", OPT_DURATION, OFF(rollup_after), 60, 3650.0 * 86400,
     "DURATION", "minute buckets older than this are merged into hour buckets (default 48h)"},
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static void defaults(struct mls_config *c)
{
    memset(c, 0, sizeof(*c));
    strcpy(c->bind, "127.0.0.1");
    c->port = 8080;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = cores > 0 ? (cores > 1024 ? 1024 : (unsigned)cores) : 1;
    /* One HTTP thread a core answers small requests without the hop to a worker (measured:
     * 37 us of CPU a request against 49 with one thread; 1.05 of nginx's rate against 0.80
     * with wrk -t2 on 2 cores); beyond 4, accepting and parsing are not the limit. */
    c->http_threads = cores > 4 ? 4u : cores > 0 ? (unsigned)cores : 1u;
    c->queue_depth = 256;
    c->max_body_bytes = 64ull << 20;
    c->max_elements = 16777216;
    c->request_timeout = 30;
    c->connection_timeout = 60;
    c->drain_timeout = 30;
    c->max_connections = 4096;
    c->max_connections_per_ip = 64;
    c->header_timeout = 10;
    c->max_inflight_bytes = mls_config_default_inflight_bytes();
    c->max_inflight_bytes_per_ip = 0; /* not given: half of max_inflight_bytes, once known */
    strcpy(c->state, "maskloss-state.db");
    c->state_wait = 30;
    c->state_timeout = 10;
    c->max_monitors = 1000;
    c->max_classes = 4096;
    c->max_slice_values = 1000;
    c->rollup_after = 48 * 3600;
    c->state_cache = 64ull << 20;
    c->state_mmap = 2ull << 30;
}

/* A cgroup v2 (or v1) memory limit, 0 when there is none. */
static uint64_t cgroup_memory_limit(void)
{
    static const char *const files[] = {"/sys/fs/cgroup/memory.max",
                                        "/sys/fs/cgroup/memory/memory.limit_in_bytes"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        FILE *f = fopen(files[i], "r");
        unsigned long long v = 0;
        if (!f)
            continue;
        int n = fscanf(f, "%llu", &v); /* "max" reads as nothing: no limit */
        fclose(f);
        if (n == 1 && v > 0 && v < (1ull << 60))
            return v;
    }
    return 0;
}

uint64_t mls_config_default_inflight_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t mem = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : (4ull << 30);
    uint64_t cg = cgroup_memory_limit();
    if (cg && cg < mem)
        mem = cg;
    return mem / 2;
}

static void print_help(FILE *out)
{
    fputs("usage: maskloss-server [OPTION]...\n"
          "\n"
          "Serves the maskloss JSON protocol over HTTP: POST /v1/loss, POST /v1/batch,\n"
          "GET /v1/losses, monitors under /v1/monitors (kept in the --state file), the Open\n"
          "Inference Protocol under /v2, /healthz, /readyz, /metrics. Every option can also\n"
          "be set with its environment variable; a flag wins over the environment.\n"
          "\n",
          out);
    for (size_t i = 0; i < NOPTS; i++) {
        char left[64];
        snprintf(left, sizeof(left), "--%s%s%s", opts[i].flag, opts[i].arg ? " " : "",
                 opts[i].arg ? opts[i].arg : "");
        fprintf(out, "  %-24s %s\n  %-24s [%s]\n", left, opts[i].help, "", opts[i].env);
    }
    fputs("  --help                   this text\n"
          "  --version                the version\n"
          "\n"
          "SIGTERM or SIGINT drains: /readyz answers 503, new requests get 503, every accepted\n"
          "request is answered, then the server exits 0. SIGHUP is logged and ignored.\n",
          out);
}

/* Parses one value into the field of o; returns 0 or -1 with a reason in why. */
static int set_value(struct mls_config *c, const struct opt *o, const char *v, const char **why)
{
    void *field = (char *)c + o->offset;
    char *end = NULL;
    errno = 0;
    switch (o->kind) {
    case OPT_STRING:
        if (!*v || strlen(v) >= (size_t)o->max) {
            *why = "expected a non-empty value, shorter than that";
            return -1;
        }
        strcpy((char *)field, v);
        return 0;
    case OPT_DURATION: {
        int64_t d = mls_duration_parse(v);
        if (d < o->min || d > o->max) {
            *why = "expected a duration such as 90m, 48h or 7d, from 1m to 3650d";
            return -1;
        }
        *(long long *)field = d;
        return 0;
    }
    case OPT_FLAG:
        if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
            !strcasecmp(v, "on")) {
            *(int *)field = 1;
            return 0;
        }
        if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") ||
            !strcasecmp(v, "off") || !*v) {
            *(int *)field = 0;
            return 0;
        }
        *why = "expected 1/0, true/false, yes/no or on/off";
        return -1;
    case OPT_SECONDS:
    case OPT_NUMBER: {
        double d = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(d) || d < o->min || d > o->max) {
            *why = o->kind == OPT_SECONDS ? "expected a number of seconds, at least 0.001"
                                          : "expected a number";
            return -1;
        }
        *(double *)field = d;
        return 0;
    }
    case OPT_ORIGINS:
        return mls_origins_add((char *)field, (size_t)o->max, v, why);
    default:
        break;
    }
    /* Integers: no sign, no fraction; OPT_BYTES also takes a binary K/M/G suffix. */
    if (*v < '0' || *v > '9') {
        *why = "expected a non-negative integer";
        return -1;
    }
    unsigned long long n = strtoull(v, &end, 10);
    if (errno) {
        *why = "the number is too large";
        return -1;
    }
    if (o->kind == OPT_BYTES && *end && !end[1]) {
        const char *suffixes = "KMG";
        const char *s = strchr(suffixes, end[0] & ~0x20);
        if (s) {
            unsigned shift = 10u * (unsigned)(s - suffixes + 1);
            if (n > (~0ull >> shift)) {
                *why = "the number is too large";
                return -1;
            }
            n <<= shift;
            end++;
        }
    }
    if (*end) {
        *why = o->kind == OPT_BYTES ? "expected a byte count such as 1048576 or 64M"
                                    : "expected a non-negative integer";
        return -1;
    }
    if ((double)n < o->min || (double)n > o->max) {
        *why = "out of range";
        return -1;
    }
    if (o->kind == OPT_UINT)
        *(unsigned *)field = (unsigned)n;
    else if (o->kind == OPT_BYTES)
        *(uint64_t *)field = n;
    else
        *(long long *)field = (long long)n;
    return 0;
}

static void range_hint(FILE *err, const struct opt *o)
{
    if (o->kind == OPT_UINT || o->kind == OPT_LLONG || o->kind == OPT_BYTES ||
        o->kind == OPT_NUMBER)
        fprintf(err, " (from %.0f to %.0f)", o->min, o->max);
}

int mls_config_parse(struct mls_config *c, int argc, char **argv, FILE *out, FILE *err)
{
    const char *why = NULL;
    defaults(c);
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = getenv(opts[i].env);
        if (v && set_value(c, &opts[i], v, &why)) {
            fprintf(err, "maskloss-server: %s='%s': %s", opts[i].env, v, why);
            range_hint(err, &opts[i]);
            fputc('\n', err);
            return MLS_CONFIG_ERROR;
        }
    }
    /* The long options, from the same table: opts[i] returns OPT_BASE + i. */
    enum { OPT_BASE = 256, VERSION = OPT_BASE + (int)NOPTS };
    struct option longopts[NOPTS + 3];
    for (size_t i = 0; i < NOPTS; i++)
        longopts[i] = (struct option){
            opts[i].flag, opts[i].kind == OPT_FLAG ? optional_argument : required_argument, NULL,
            OPT_BASE + (int)i};
    longopts[NOPTS] = (struct option){"help", no_argument, NULL, 'h'};
    longopts[NOPTS + 1] = (struct option){"version", no_argument, NULL, VERSION};
    longopts[NOPTS + 2] = (struct option){NULL, 0, NULL, 0};
    optind = 0; /* a full reset of getopt's state: parsing may run more than once */
    opterr = 0; /* our own messages, naming the option */
    int ch;
    unsigned char listed[NOPTS] = {0}; /* OPT_ORIGINS given as a flag already */
    /* "+": stop at the first operand; ":": a missing value returns ':'. */
    while ((ch = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1) {
        if (ch == 'h') {
            print_help(out);
            return MLS_CONFIG_EXIT;
        }
        if (ch == VERSION) {
            fprintf(out, "maskloss-server %s\n", ML_VERSION);
            return MLS_CONFIG_EXIT;
        }
        if (ch == ':' && optopt >= OPT_BASE && optopt < VERSION) {
            fprintf(err, "maskloss-server: --%s needs a value %s\n", opts[optopt - OPT_BASE].flag,
                    opts[optopt - OPT_BASE].arg);
            return MLS_CONFIG_ERROR;
        }
        if (ch < OPT_BASE || ch >= VERSION) {
            fprintf(err, "maskloss-server: unknown option '%s' (see --help)\n", argv[optind - 1]);
            return MLS_CONFIG_ERROR;
        }
        const struct opt *o = &opts[ch - OPT_BASE];
        const char *v = optarg ? optarg : "1"; /* a flag without a value turns it on */
        if (o->kind == OPT_ORIGINS && !listed[ch - OPT_BASE]++)
            *((char *)c + o->offset) = '\0'; /* the flags' list replaces the environment's */
        if (set_value(c, o, v, &why)) {
            fprintf(err, "maskloss-server: --%s '%s': %s", o->flag, v, why);
            range_hint(err, o);
            fputc('\n', err);
            return MLS_CONFIG_ERROR;
        }
    }
    if (optind < argc) {
        fprintf(err, "maskloss-server: unexpected argument '%s' (see --help)\n", argv[optind]);
        return MLS_CONFIG_ERROR;
    }
    if (!c->max_inflight_bytes_per_ip)
        c->max_inflight_bytes_per_ip = c->max_inflight_bytes / 2 ? c->max_inflight_bytes / 2 : 1;
    if (c->max_inflight_bytes_per_ip > c->max_inflight_bytes)
        c->max_inflight_bytes_per_ip = c->max_inflight_bytes; /* the whole budget: no share */
    return MLS_CONFIG_OK;
}
