/*
 * ui.h -- the status page: its files, embedded at build time (scripts/embed.sh generates the
 * table from the files of server/ui), and GET /v1/stats, the server's counters as JSON for
 * the page.
 *
 * GET / and GET /ui/<file> answer from the table: static bytes, no token, no state. The page
 * reads /v1/stats (the metrics scope, as /metrics) and the monitor routes.
 */
#ifndef MLS_UI_H
#define MLS_UI_H

#include <stddef.h>

#include "metrics.h"
#include "mlp.h"

struct mls_ui_asset {
    const char *name;         /* the file's base name: "index.html" */
    const char *content_type; /* by its extension */
    const unsigned char *data;
    size_t len;
    const char *etag; /* quoted, as sent: "\"<crc32>-<length>\"" (hexadecimal) */
};

/* Generated (scripts/embed.sh): every file of server/ui, and the build's git description
 * (git describe --always, "-dirty" with uncommitted changes; "unknown" outside git). */
extern const struct mls_ui_asset mls_ui_assets[];
extern const size_t mls_ui_num_assets;
extern const char mls_build_id[];
/* Generated (scripts/embed.sh -n api): proto/openapi.json, the HTTP contract, served as the
 * page's files are (same headers, ETag, no token) at /openapi.json and /v1/openapi.json. */
extern const struct mls_ui_asset mls_api_assets[];
extern const size_t mls_api_num_assets;

/* Whether a request path is one of the static files' (the route of GET /, /ui/<name>,
 * /openapi.json and /v1/openapi.json), whether or not such a file exists. */
int mls_ui_route(const char *path);

/* The asset a request path names: "/" is index.html, "/ui/<name>" the file of that name,
 * "/openapi.json" and "/v1/openapi.json" the OpenAPI document; NULL for anything else
 * (names are matched whole: no directories, no "..").
 * Any thread (the table is constant). */
const struct mls_ui_asset *mls_ui_find(const char *path);

/* Whether an If-None-Match header value holds the ETag etag (RFC 9110 13.1.2: a list of
 * entity tags compared weakly, or "*"). */
int mls_ui_etag_matches(const char *if_none_match, const char *etag);

/* What /v1/stats shows besides the metrics' counters: sampled by the caller, as /metrics's
 * gauges are. */
struct mls_stats_info {
    const struct mls_gauges *gauges;
    unsigned http_threads;
    double now; /* Unix seconds */
};

/* Appends the /v1/stats document (README "The status page"). MHD thread. */
void mls_ui_write_stats(struct mls_metrics *m, const struct mls_stats_info *info,
                        struct mlp_buf *b);

#endif /* MLS_UI_H */
