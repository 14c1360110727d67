/*
 * ui.c -- the status page's files (the table scripts/embed.sh generates) and /v1/stats, the
 * metrics' counters as one JSON document for the page.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "maskloss.h"
#include "ui.h"

/* The one definition of the static files' paths: the name of the file a path asks for
 * ("index.html" for "/", <name> for "/ui/<name>", API for the OpenAPI document), or NULL
 * for a path outside them. */
static const char API[] = "openapi.json";

static const char *file_name(const char *path)
{
    if (!strcmp(path, "/openapi.json") || !strcmp(path, "/v1/openapi.json"))
        return API;
    if (!strcmp(path, "/"))
        return "index.html";
    if (!strncmp(path, "/ui/", 4))
        return path + 4;
    return NULL;
}

int mls_ui_route(const char *path)
{
    return file_name(path) != NULL;
}

const struct mls_ui_asset *mls_ui_find(const char *path)
{
    const char *name = file_name(path);
    if (name == API)
        return mls_api_num_assets ? &mls_api_assets[0] : NULL;
    if (!name)
        return NULL;
    /* Whole names only: embed.sh allows no '/' in them, so "../x" or "a/b" is never found. */
    for (size_t i = 0; i < mls_ui_num_assets; i++)
        if (!strcmp(mls_ui_assets[i].name, name))
            return &mls_ui_assets[i];
    return NULL;
}

int mls_ui_etag_matches(const char *v, const char *etag)
{
    size_t n = strlen(etag);
    for (;;) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        if (!*v)
            return 0;
        if (*v == '*')
            return 1;
        if (!strncmp(v, "W/", 2)) /* weak comparison: the W/ prefix is not compared */
            v += 2;
        if (*v != '"')
            return 0; /* not an entity tag: the list is malformed, compare no further */
        const char *end = strchr(v + 1, '"');
        if (!end)
            return 0;
        size_t len = (size_t)(end + 1 - v);
        end += strspn(end + 1, " \t") + 1;
        if (*end && *end != ',')
            return 0; /* bytes after the tag's closing quote: malformed, as above */
        if (len == n && !memcmp(v, etag, n))
            return 1;
        v = end;
    }
}

/* ---- /v1/stats ------------------------------------------------------------------------- */

/* A comma before an object's member or an array's item, unless it is the first. */
static void sep(struct mlp_buf *b)
{
    if (b->len && b->data[b->len - 1] != '{' && b->data[b->len - 1] != '[')
        mlp_buf_puts(b, ",");
}

static void put_key(struct mlp_buf *b, const char *key)
{
    sep(b);
    mlp_buf_string(b, key);
    mlp_buf_puts(b, ":");
}

static void put_u(struct mlp_buf *b, const char *key, uint64_t v)
{
    char tmp[32];
    put_key(b, key);
    snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v);
    mlp_buf_puts(b, tmp);
}

/* "key": {"k0": v0, "k1": v1, "k2": v2} */
static void put_three(struct mlp_buf *b, const char *key, const char *const k[3],
                      const uint64_t v[3])
{
    put_key(b, key);
    mlp_buf_puts(b, "{");
    for (int i = 0; i < 3; i++)
        put_u(b, k[i], v[i]);
    mlp_buf_puts(b, "}");
}

/* A number in seconds, or null for a quantile of nothing (NaN). */
static void put_d(struct mlp_buf *b, const char *key, double v)
{
    put_key(b, key);
    if (isnan(v))
        mlp_buf_puts(b, "null");
    else
        mlp_buf_number(b, v);
}

/* "key": {"count": N, "sum_seconds": F, "p50": F|null, "p90": ..., "p99": ...} */
static void put_latency(struct mlp_buf *b, const char *key, struct mls_histogram *hist)
{
    struct mls_histogram_read h;
    mls_histogram_read(hist, &h);
    put_key(b, key);
    mlp_buf_puts(b, "{");
    put_u(b, "count", h.count);
    put_d(b, "sum_seconds", h.sum_seconds);
    put_d(b, "p50", mls_histogram_quantile(&h, 0.5));
    put_d(b, "p90", mls_histogram_quantile(&h, 0.9));
    put_d(b, "p99", mls_histogram_quantile(&h, 0.99));
    mlp_buf_puts(b, "}");
}

void mls_ui_write_stats(struct mls_metrics *m, const struct mls_stats_info *info, struct mlp_buf *b)
{
    const struct mls_gauges *g = info->gauges;

    mlp_buf_puts(b, "{");
    put_key(b, "version");
    mlp_buf_string(b, ML_VERSION);
    put_key(b, "build");
    mlp_buf_string(b, mls_build_id);
    put_d(b, "now", info->now);
    put_d(b, "started", m->start_time);
    put_d(b, "uptime_seconds", info->now > m->start_time ? info->now - m->start_time : 0.0);
    put_u(b, "workers", g->workers);
    put_u(b, "http_threads", info->http_threads);
    static const char *const queue_keys[3] = {"queued", "running", "capacity"};
    put_three(b, "queue", queue_keys, (uint64_t[3]){g->queued, g->running, g->queue_capacity});
    int64_t inflight = atomic_load_explicit(&m->in_flight, memory_order_relaxed);
    put_u(b, "in_flight", inflight > 0 ? (uint64_t)inflight : 0);
    put_u(b, "inflight_bytes", g->inflight_bytes);
    put_u(b, "inflight_limit", g->inflight_limit);
    put_u(b, "bytes_received", atomic_load_explicit(&m->bytes_received, memory_order_relaxed));
    put_u(b, "bytes_sent", atomic_load_explicit(&m->bytes_sent, memory_order_relaxed));
    put_key(b, "ready");
    mlp_buf_puts(b, g->ready ? "true" : "false");

    /* Every route that has answered, with the codes it answered (the counters /metrics shows
     * as maskloss_http_requests_total); requests is the sum of its codes. */
    put_key(b, "routes");
    mlp_buf_puts(b, "[");
    for (int r = 0; r < MLS_ROUTE_COUNT; r++) {
        uint64_t n[MLS_NUM_CODES], total = 0;
        for (int c = 0; c < MLS_NUM_CODES; c++) {
            n[c] = atomic_load_explicit(&m->requests[r][c], memory_order_relaxed);
            total += n[c];
        }
        if (!total)
            continue;
        sep(b);
        mlp_buf_puts(b, "{");
        put_key(b, "route");
        mlp_buf_string(b, mls_route_path((enum mls_route)r));
        put_u(b, "requests", total);
        put_key(b, "codes");
        mlp_buf_puts(b, "{");
        for (int c = 0; c < MLS_NUM_CODES; c++) {
            char code[16];
            snprintf(code, sizeof(code), "%u", mls_metrics_code(c));
            if (n[c])
                put_u(b, code, n[c]);
        }
        mlp_buf_puts(b, "}");
        put_latency(b, "latency", &m->latency[r]);
        mlp_buf_puts(b, "}");
    }
    mlp_buf_puts(b, "]");
    put_key(b, "latency_buckets");
    mlp_buf_puts(b, "[");
    for (int i = 0; i < MLS_LATENCY_BUCKETS; i++) {
        sep(b);
        mlp_buf_number(b, mls_latency_bound(i));
    }
    mlp_buf_puts(b, "]");

    put_key(b, "elements");
    mlp_buf_puts(b, "{");
    for (size_t i = 0; i < m->num_losses; i++) {
        uint64_t v = atomic_load_explicit(&m->elements[i], memory_order_relaxed);
        if (v)
            put_u(b, ml_loss_at(i)->name, v);
    }
    mlp_buf_puts(b, "}");
    put_u(b, "batch_entries", atomic_load_explicit(&m->batch_entries, memory_order_relaxed));
    put_latency(b, "queue_wait", &m->queue_wait);
    static const char *const state_keys[3] = {"commits", "observations", "failures"};
    put_three(b, "state", state_keys,
              (uint64_t[3]){g->state_commits, g->state_observations, g->state_failures});
    mlp_buf_puts(b, "}");
}
