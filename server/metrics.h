/*
 * metrics.h -- the server's counters and histograms, exposed as Prometheus text 0.0.4.
 *
 * Updated with relaxed atomics from the HTTP threads and the workers; read by /metrics.
 * Names follow Prometheus conventions: a maskloss_ prefix, base units (seconds, bytes),
 * _total on counters, labels of bounded cardinality (route, code, loss).
 */
#ifndef MLS_METRICS_H
#define MLS_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#include "mlp.h"

enum mls_route {
    MLS_ROUTE_LOSS,    /* POST /v1/loss */
    MLS_ROUTE_BATCH,   /* POST /v1/batch */
    MLS_ROUTE_LOSSES,  /* GET /v1/losses */
    MLS_ROUTE_HEALTHZ, /* GET /healthz */
    MLS_ROUTE_READYZ,  /* GET /readyz */
    MLS_ROUTE_METRICS, /* GET /metrics */
    /* The Open Inference Protocol (v2); {model} stands for any loss name. */
    MLS_ROUTE_V2_INFER,       /* POST /v2/models/{model}[/versions/1]/infer */
    MLS_ROUTE_V2_MODEL,       /* GET /v2/models/{model}[/versions/1] */
    MLS_ROUTE_V2_MODEL_READY, /* GET /v2/models/{model}[/versions/1]/ready */
    MLS_ROUTE_V2_SERVER,      /* GET /v2 */
    MLS_ROUTE_V2_LIVE,        /* GET /v2/health/live */
    MLS_ROUTE_V2_READY,       /* GET /v2/health/ready */
    /* Monitors; {name} stands for any monitor's name. */
    MLS_ROUTE_MONITORS,            /* GET /v1/monitors */
    MLS_ROUTE_MONITOR,             /* GET, PUT, DELETE /v1/monitors/{name} */
    MLS_ROUTE_MONITOR_OBSERVE,     /* POST /v1/monitors/{name}/observe */
    MLS_ROUTE_MONITOR_SERIES,      /* GET /v1/monitors/{name}/series */
    MLS_ROUTE_MONITOR_PREDICTIONS, /* POST /v1/monitors/{name}/predictions */
    MLS_ROUTE_MONITOR_LABELS,      /* POST /v1/monitors/{name}/labels */
    MLS_ROUTE_STATS,               /* GET /v1/stats */
    MLS_ROUTE_UI,                  /* GET / and /ui/{file}: the status page (label "/ui") */
    MLS_ROUTE_OTHER,               /* anything else (404) */
    MLS_ROUTE_COUNT
};

/* The path of a route: its metric label ("other" for MLS_ROUTE_OTHER, "/ui" for the status
 * page's files). */
const char *mls_route_path(enum mls_route r);

/* The status codes the server answers with, in the order of the counters. */
#define MLS_CODES                                                                                  \
    {                                                                                              \
        200, 201, 204, 304, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429, 500, 501, 503   \
    }
#define MLS_NUM_CODES 18

/* The status code of counter c (0 <= c < MLS_NUM_CODES). */
unsigned mls_metrics_code(int c);

/* Why a request ended without a response. */
enum mls_abort {
    MLS_ABORT_TIMEOUT,
    MLS_ABORT_CLIENT,
    MLS_ABORT_ERROR,
    MLS_ABORT_SHUTDOWN,
    MLS_ABORT_COUNT
};

#define MLS_LATENCY_BUCKETS 16

struct mls_histogram {
    _Atomic uint64_t buckets[MLS_LATENCY_BUCKETS + 1]; /* per bucket (not cumulative); +Inf */
    _Atomic uint64_t sum_ns;
};

/* The upper bound of latency bucket i (0 <= i < MLS_LATENCY_BUCKETS), in seconds. */
double mls_latency_bound(int i);

/* A histogram read once, as /metrics shows it: cumulative counts, the last one +Inf's. */
struct mls_histogram_read {
    uint64_t cumulative[MLS_LATENCY_BUCKETS + 1];
    uint64_t count;
    double sum_seconds;
};
void mls_histogram_read(struct mls_histogram *h, struct mls_histogram_read *out);

/* The q-quantile (0 <= q <= 1) of a histogram read, in seconds, interpolated linearly within
 * its bucket as Prometheus's histogram_quantile() does (promql/quantile.go bucketQuantile);
 * NaN when it counted nothing. */
double mls_histogram_quantile(const struct mls_histogram_read *h, double q);

struct mls_metrics {
    _Atomic uint64_t requests[MLS_ROUTE_COUNT][MLS_NUM_CODES];
    _Atomic uint64_t aborted[MLS_ABORT_COUNT];
    struct mls_histogram latency[MLS_ROUTE_COUNT];
    struct mls_histogram queue_wait;
    _Atomic uint64_t bytes_received, bytes_sent;
    _Atomic int64_t in_flight;  /* requests between their headers and their completion */
    _Atomic uint64_t *elements; /* by catalogue index */
    _Atomic uint64_t batch_entries;
    size_t num_losses;
    double start_time; /* Unix seconds */
};

int mls_metrics_init(struct mls_metrics *m);
void mls_metrics_free(struct mls_metrics *m);

void mls_metrics_request(struct mls_metrics *m, enum mls_route route, unsigned status,
                         uint64_t latency_ns, uint64_t bytes_in, uint64_t bytes_out);
void mls_metrics_abort(struct mls_metrics *m, enum mls_abort why, uint64_t bytes_in);
void mls_metrics_queue_wait(struct mls_metrics *m, uint64_t wait_ns);
void mls_metrics_elements(struct mls_metrics *m, const char *loss_name, long long n);

/* Gauges owned elsewhere, sampled when /metrics is rendered. */
struct mls_gauges {
    unsigned queued, running, queue_capacity, workers;
    uint64_t parts_helped;
    int ready;
    uint64_t inflight_bytes, inflight_limit; /* the memory budget, used and whole */
    uint64_t header_timeouts, lingered;      /* connections (conn.h) */
    uint64_t tls_failed;                     /* TLS handshakes that failed */
    /* The monitors' state (writer.h): transactions committed, the time they took, the
     * observations they counted, the writes that failed. */
    uint64_t state_commits, state_commit_ns, state_observations, state_failures;
};

/* Appends the exposition text. */
void mls_metrics_write(struct mls_metrics *m, const struct mls_gauges *g, struct mlp_buf *b);

#endif /* MLS_METRICS_H */
