/*
 * metrics.c -- counters, histograms and their Prometheus text exposition (format 0.0.4).
 */
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "maskloss.h"
#include "metrics.h"

static const char *const route_paths[MLS_ROUTE_COUNT] = {
    "/v1/loss",
    "/v1/batch",
    "/v1/losses",
    "/healthz",
    "/readyz",
    "/metrics",
    "/v2/models/{model}/infer",
    "/v2/models/{model}",
    "/v2/models/{model}/ready",
    "/v2",
    "/v2/health/live",
    "/v2/health/ready",
    "/v1/monitors",
    "/v1/monitors/{name}",
    "/v1/monitors/{name}/observe",
    "/v1/monitors/{name}/series",
    "/v1/monitors/{name}/predictions",
    "/v1/monitors/{name}/labels",
    "/v1/stats",
    "/ui",
    "other",
};

static const unsigned codes[MLS_NUM_CODES] = MLS_CODES;

static const char *const abort_names[MLS_ABORT_COUNT] = {"timeout", "client_abort", "error",
                                                         "shutdown"};

/* Upper bounds in seconds: 100 us to 10 s, roughly 1-2.5-5 per decade. */
static const double bounds[MLS_LATENCY_BUCKETS] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                   0.01,   0.025,   0.05,   0.1,   0.25,   0.5,
                                                   1,      2.5,     5,      10};

const char *mls_route_path(enum mls_route r)
{
    return r < MLS_ROUTE_COUNT ? route_paths[r] : "other";
}

unsigned mls_metrics_code(int c)
{
    return codes[c];
}

double mls_latency_bound(int i)
{
    return bounds[i];
}

int mls_metrics_init(struct mls_metrics *m)
{
    memset(m, 0, sizeof(*m));
    m->num_losses = ml_loss_count();
    m->elements = calloc(m->num_losses ? m->num_losses : 1, sizeof(*m->elements));
    if (!m->elements)
        return -1;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m->start_time = (double)ts.tv_sec + ts.tv_nsec * 1e-9;
    return 0;
}

void mls_metrics_free(struct mls_metrics *m)
{
    free((void *)m->elements);
    m->elements = NULL;
}

static void observe(struct mls_histogram *h, uint64_t ns)
{
    double s = (double)ns * 1e-9;
    size_t i = 0;
    while (i < MLS_LATENCY_BUCKETS && s > bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

void mls_metrics_request(struct mls_metrics *m, enum mls_route route, unsigned status,
                         uint64_t latency_ns, uint64_t bytes_in, uint64_t bytes_out)
{
    size_t c = 0;
    while (c < MLS_NUM_CODES && codes[c] != status)
        c++;
    if (c == MLS_NUM_CODES) { /* an unexpected status is a bug: count it with the 500s */
        c = 0;
        while (codes[c] != 500)
            c++;
    }
    atomic_fetch_add_explicit(&m->requests[route][c], 1, memory_order_relaxed);
    observe(&m->latency[route], latency_ns);
    atomic_fetch_add_explicit(&m->bytes_received, bytes_in, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->bytes_sent, bytes_out, memory_order_relaxed);
}

void mls_metrics_abort(struct mls_metrics *m, enum mls_abort why, uint64_t bytes_in)
{
    atomic_fetch_add_explicit(&m->aborted[why], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->bytes_received, bytes_in, memory_order_relaxed);
}

void mls_metrics_queue_wait(struct mls_metrics *m, uint64_t wait_ns)
{
    observe(&m->queue_wait, wait_ns);
}

void mls_metrics_elements(struct mls_metrics *m, const char *loss_name, long long n)
{
    if (!loss_name || n <= 0)
        return;
    /* loss_name is the catalogue's own string (mlp_eval_info): found by its address, without
     * comparing the text of every name before it, on every request. */
    for (size_t i = 0; i < m->num_losses; i++) {
        if (ml_loss_at(i)->name == loss_name) {
            atomic_fetch_add_explicit(&m->elements[i], (uint64_t)n, memory_order_relaxed);
            return;
        }
    }
    for (size_t i = 0; i < m->num_losses; i++) {
        if (!strcmp(ml_loss_at(i)->name, loss_name)) {
            atomic_fetch_add_explicit(&m->elements[i], (uint64_t)n, memory_order_relaxed);
            return;
        }
    }
}

/* ---- Exposition ------------------------------------------------------------------------ */

/* A sanitizer's runtime replaces malloc with its own allocator, which mallinfo2 knows nothing
 * of, and says what it holds here; a weak reference: NULL without a sanitizer. */
extern size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));

/*
 * Bytes allocated and not freed, in the whole process (glibc counts what its per-thread
 * caches hold as allocated): the soak's measure of growth, where the resident size also
 * holds the allocator's free pages, or a sanitizer's shadow memory. 0 when unknown.
 */
static uint64_t heap_bytes(void)
{
    if (__sanitizer_get_current_allocated_bytes) {
        size_t n = __sanitizer_get_current_allocated_bytes();
        if (n)
            return n;
    }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    struct mallinfo2 mi = mallinfo2();
    return (uint64_t)mi.uordblks + (uint64_t)mi.hblkhd; /* in use in the arenas + mmapped */
#else
    return 0;
#endif
}

static void header(struct mlp_buf *b, const char *name, const char *type, const char *help)
{
    char tmp[256];
    snprintf(tmp, sizeof(tmp), "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    mlp_buf_puts(b, tmp);
}

static void sample_u(struct mlp_buf *b, const char *name, const char *labels, uint64_t v)
{
    char tmp[32];
    mlp_buf_puts(b, name);
    mlp_buf_puts(b, labels);
    snprintf(tmp, sizeof(tmp), " %llu\n", (unsigned long long)v);
    mlp_buf_puts(b, tmp);
}

static void sample_d(struct mlp_buf *b, const char *name, const char *labels, double v)
{
    char tmp[40];
    mlp_buf_puts(b, name);
    mlp_buf_puts(b, labels);
    snprintf(tmp, sizeof(tmp), " %.17g\n", v);
    mlp_buf_puts(b, tmp);
}

void mls_histogram_read(struct mls_histogram *h, struct mls_histogram_read *out)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= MLS_LATENCY_BUCKETS; i++) {
        cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        out->cumulative[i] = cum;
    }
    out->count = cum;
    out->sum_seconds = (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) * 1e-9;
}

double mls_histogram_quantile(const struct mls_histogram_read *h, double q)
{
    if (!h->count)
        return NAN;
    double rank = q * (double)h->count;
    size_t b = 0; /* the first bucket whose cumulative count reaches the rank */
    while (b < MLS_LATENCY_BUCKETS && (double)h->cumulative[b] < rank)
        b++;
    if (b == MLS_LATENCY_BUCKETS) /* in +Inf's bucket: the highest finite bound */
        return bounds[MLS_LATENCY_BUCKETS - 1];
    double start = 0, count = (double)h->cumulative[b];
    if (b > 0) {
        start = bounds[b - 1];
        count -= (double)h->cumulative[b - 1];
        rank -= (double)h->cumulative[b - 1];
    }
    return start + (bounds[b] - start) * (rank / count);
}

/* A histogram's lines; `label` is "" or `key="value"` without braces. */
static void histogram(struct mlp_buf *b, const char *name, const char *label,
                      struct mls_histogram *h)
{
    char sample[128], labels[192];
    struct mls_histogram_read read;
    const char *sep = *label ? "," : "";
    mls_histogram_read(h, &read);
    snprintf(sample, sizeof(sample), "%s_bucket", name);
    for (size_t i = 0; i <= MLS_LATENCY_BUCKETS; i++) {
        if (i < MLS_LATENCY_BUCKETS)
            snprintf(labels, sizeof(labels), "{%s%sle=\"%g\"}", label, sep, bounds[i]);
        else
            snprintf(labels, sizeof(labels), "{%s%sle=\"+Inf\"}", label, sep);
        sample_u(b, sample, labels, read.cumulative[i]);
    }
    snprintf(labels, sizeof(labels), *label ? "{%s}" : "%s", label);
    snprintf(sample, sizeof(sample), "%s_sum", name);
    sample_d(b, sample, labels, read.sum_seconds);
    snprintf(sample, sizeof(sample), "%s_count", name);
    sample_u(b, sample, labels, read.count);
}

void mls_metrics_write(struct mls_metrics *m, const struct mls_gauges *g, struct mlp_buf *b)
{
    char labels[256];

    header(b, "maskloss_build_info", "gauge", "Version of the running server (always 1).");
    snprintf(labels, sizeof(labels), "{version=\"%s\"}", ML_VERSION);
    sample_u(b, "maskloss_build_info", labels, 1);

    header(b, "maskloss_start_time_seconds", "gauge", "Start time of the process, Unix seconds.");
    sample_d(b, "maskloss_start_time_seconds", "", m->start_time);

    header(b, "maskloss_ready", "gauge",
           "1 while /readyz answers 200, 0 while starting or draining.");
    sample_u(b, "maskloss_ready", "", g->ready ? 1 : 0);

    header(b, "maskloss_http_requests_total", "counter",
           "HTTP requests answered, by route and status code.");
    for (int r = 0; r < MLS_ROUTE_COUNT; r++) {
        for (int c = 0; c < MLS_NUM_CODES; c++) {
            uint64_t v = atomic_load_explicit(&m->requests[r][c], memory_order_relaxed);
            /* Every route's 200 is always present, so rates start from a known zero. */
            if (!v && !(c == 0 && r != MLS_ROUTE_OTHER))
                continue;
            snprintf(labels, sizeof(labels), "{route=\"%s\",code=\"%u\"}", route_paths[r],
                     codes[c]);
            sample_u(b, "maskloss_http_requests_total", labels, v);
        }
    }

    header(b, "maskloss_http_requests_aborted_total", "counter",
           "HTTP requests that ended without a response, by reason.");
    for (int a = 0; a < MLS_ABORT_COUNT; a++) {
        snprintf(labels, sizeof(labels), "{reason=\"%s\"}", abort_names[a]);
        sample_u(b, "maskloss_http_requests_aborted_total", labels,
                 atomic_load_explicit(&m->aborted[a], memory_order_relaxed));
    }

    header(b, "maskloss_http_request_duration_seconds", "histogram",
           "Time from a request's headers to its response being sent, by route.");
    for (int r = 0; r < MLS_ROUTE_COUNT; r++) {
        snprintf(labels, sizeof(labels), "route=\"%s\"", route_paths[r]);
        histogram(b, "maskloss_http_request_duration_seconds", labels, &m->latency[r]);
    }

    header(b, "maskloss_queue_wait_seconds", "histogram",
           "Time requests waited in the queue for a worker.");
    histogram(b, "maskloss_queue_wait_seconds", "", &m->queue_wait);

    header(b, "maskloss_http_requests_in_flight", "gauge",
           "Requests received and not yet completed, including queued ones.");
    int64_t inflight = atomic_load_explicit(&m->in_flight, memory_order_relaxed);
    sample_u(b, "maskloss_http_requests_in_flight", "", inflight > 0 ? (uint64_t)inflight : 0);

    header(b, "maskloss_queue_jobs", "gauge", "Requests waiting in the queue for a worker.");
    sample_u(b, "maskloss_queue_jobs", "", g->queued);
    header(b, "maskloss_running_jobs", "gauge", "Requests being computed by a worker.");
    sample_u(b, "maskloss_running_jobs", "", g->running);
    header(b, "maskloss_queue_capacity", "gauge", "Queue depth beyond which requests get 503.");
    sample_u(b, "maskloss_queue_capacity", "", g->queue_capacity);
    header(b, "maskloss_workers", "gauge", "Compute threads.");
    sample_u(b, "maskloss_workers", "", g->workers);

    header(b, "maskloss_inflight_bytes", "gauge",
           "Memory reserved by the requests in flight: bodies and their decoding.");
    sample_u(b, "maskloss_inflight_bytes", "", g->inflight_bytes);
    header(b, "maskloss_inflight_bytes_limit", "gauge",
           "The memory budget of the requests in flight (--max-inflight-bytes).");
    sample_u(b, "maskloss_inflight_bytes_limit", "", g->inflight_limit);
    uint64_t heap = heap_bytes();
    if (heap) { /* left out where the allocator does not say */
        header(b, "maskloss_heap_bytes", "gauge",
               "Memory the process's allocator has handed out and not taken back (glibc's "
               "mallinfo2, with what its per-thread caches hold, or a sanitizer's allocator).");
        sample_u(b, "maskloss_heap_bytes", "", heap);
    }
    header(b, "maskloss_header_timeouts_total", "counter",
           "Connections closed because a request's headers took longer than their deadline.");
    sample_u(b, "maskloss_header_timeouts_total", "", g->header_timeouts);
    header(b, "maskloss_lingering_closes_total", "counter",
           "Connections answered before their request was read, then closed by lingering.");
    sample_u(b, "maskloss_lingering_closes_total", "", g->lingered);
    header(b, "maskloss_tls_handshake_failures_total", "counter",
           "TLS handshakes that failed (a TCP probe, plain HTTP, an untrusted certificate).");
    sample_u(b, "maskloss_tls_handshake_failures_total", "", g->tls_failed);

    header(b, "maskloss_state_commits_total", "counter",
           "Transactions of the monitors' state committed (group commit: many observations each).");
    sample_u(b, "maskloss_state_commits_total", "", g->state_commits);
    header(b, "maskloss_state_commit_seconds_total", "counter",
           "Time spent committing the monitors' state, fsync included.");
    sample_d(b, "maskloss_state_commit_seconds_total", "", (double)g->state_commit_ns * 1e-9);
    header(b, "maskloss_state_observations_total", "counter",
           "Observations committed to the monitors' state (duplicates not counted).");
    sample_u(b, "maskloss_state_observations_total", "", g->state_observations);
    header(b, "maskloss_state_failures_total", "counter",
           "Writes of the monitors' state that failed (answered 503 state_unavailable).");
    sample_u(b, "maskloss_state_failures_total", "", g->state_failures);

    header(b, "maskloss_split_parts_helped_total", "counter",
           "Parts of large requests computed by a worker other than the request's own.");
    sample_u(b, "maskloss_split_parts_helped_total", "", g->parts_helped);

    header(b, "maskloss_elements_evaluated_total", "counter",
           "Elements of the main input (logits, predictions or losses) evaluated, by loss.");
    for (size_t i = 0; i < m->num_losses; i++) {
        uint64_t v = atomic_load_explicit(&m->elements[i], memory_order_relaxed);
        if (!v)
            continue;
        snprintf(labels, sizeof(labels), "{loss=\"%s\"}", ml_loss_at(i)->name);
        sample_u(b, "maskloss_elements_evaluated_total", labels, v);
    }

    header(b, "maskloss_batch_entries_total", "counter",
           "Requests carried inside /v1/batch bodies.");
    sample_u(b, "maskloss_batch_entries_total", "",
             atomic_load_explicit(&m->batch_entries, memory_order_relaxed));

    header(b, "maskloss_http_received_bytes_total", "counter", "Request body bytes received.");
    sample_u(b, "maskloss_http_received_bytes_total", "",
             atomic_load_explicit(&m->bytes_received, memory_order_relaxed));
    header(b, "maskloss_http_sent_bytes_total", "counter", "Response body bytes sent.");
    sample_u(b, "maskloss_http_sent_bytes_total", "",
             atomic_load_explicit(&m->bytes_sent, memory_order_relaxed));
}
