/*
 * monitor.h -- monitors: named, persistent streams of observations evaluated with one loss
 * configuration, kept as exact, mergeable sums per time bucket, slice and class.
 *
 * The model lives in memory (queries read it, never the store); the store (store.h) is its
 * durable copy, written by the writer thread (writer.c) before a change reaches memory. Only
 * the writer thread changes the registry and the monitors; queries and /metrics read them
 * under each monitor's read lock.
 *
 * Every figure is a sum of ml_sums (lib): the loss of a window, slice or class is
 * ml_sums_loss() of the sum of its buckets, which is what one /v1/loss call over the
 * concatenated observations answers, up to summation rounding.
 */
#ifndef MLS_MONITOR_H
#define MLS_MONITOR_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <jansson.h>

#include "late.h"
#include "maskloss.h"
#include "mlp.h"

#define MLS_MONITOR_NAME_MAX 128
#define MLS_MAX_SLICE_KEYS 8
#define MLS_MAX_WINDOWS 8
#define MLS_SLICE_VALUE_MAX 128
#define MLS_ID_MAX 128
#define MLS_ID_TTL (24 * 3600) /* seconds an idempotency key is remembered */
#define MLS_MAX_FUTURE 300     /* seconds an event time may be ahead of the clock */
#define MLS_BUCKET 60          /* the finest bucket */
#define MLS_HOUR 3600          /* minute buckets older than --rollup-after become hours */
/* Per-class figures of slices in one answer (slice values x (windows + 1) x classes): beyond,
 * slices come without theirs ("slices_per_class": false). */
#define MLS_SLICE_CLASS_FIGURES (1u << 20)
/* Per-class Prometheus series of one monitor (combinations x classes) with export_classes. */
#define MLS_CLASS_SERIES_MAX 65536u

/* Per class: the parts of ml_sums that differ between classes (a class has one element per
 * sample, so its elements and samples are the bucket's samples). */
struct mls_class_sums {
    double weighted_sum, denominator, sum_weights, num_nonzero_weights, sum_sq;
};
#define MLS_CLASS_FIELDS 5

/* A bucket's or a window's totals: the library's sums and the count of observations. */
struct mls_cell {
    struct ml_sums s;
    double observations;
};
#define MLS_CELL_FIELDS 8

/* A parsed, normalized monitor configuration. */
struct mls_mconfig {
    char *loss;      /* as given */
    char *reduction; /* canonical spelling */
    int f64;         /* dtype float64 */
    json_t *params;  /* the "params" object, or NULL */
    struct ml_ratio ratio;
    int64_t num_classes; /* 0: no per-class figures */
    char **class_names;  /* num_classes names, or NULL (classes by index) */
    int num_slice_keys;
    char *slice_keys[MLS_MAX_SLICE_KEYS];
    int num_windows;
    int64_t windows[MLS_MAX_WINDOWS]; /* seconds */
    char *window_names[MLS_MAX_WINDOWS];
    int64_t retention; /* seconds */
    double drift_z, drift_min_weight;
    int reference; /* a pinned drift baseline: buckets with reference_from <= start < _to */
    int64_t reference_from, reference_to;
    int export_classes;
    /* Late labels (late.h): how the loss takes them (MLS_LATE_NONE: no predictions), how
     * long a stored prediction takes labels, and the class slots they add (below). */
    enum mls_late_kind late;
    int late_regression;    /* its labels are any finite number (else in [0, 1]) */
    int64_t prediction_ttl; /* seconds */
    int64_t late_slots;
    char *json; /* the normalized config as JSON text */
};

/*
 * In a monitor that takes predictions, every class array (buckets, hours, deltas, the store's
 * blobs) holds late_slots more entries after its num_classes sums, read as flat doubles (the
 * late part): labelled positions per class (num_classes), then the count and the sum of the
 * first labels' delays and their histogram (MLS_DELAY_BINS). They add up like the sums, so
 * they share every path of the sums: buckets, hour sums, rollup, retention and the store.
 */
#define MLS_LATE_DOUBLES(nc) ((nc) + 2 + MLS_DELAY_BINS)
static inline int64_t mls_class_slots(const struct mls_mconfig *c)
{
    return c->num_classes + c->late_slots;
}
static inline double *mls_late_part(struct mls_class_sums *classes, int64_t num_classes)
{
    return (double *)(classes + num_classes);
}

/* Server-wide limits of monitors (flags). */
struct mls_monitor_limits {
    unsigned max_monitors;
    unsigned max_classes;
    unsigned max_slice_values; /* distinct slice combinations per monitor */
    int64_t rollup_after;      /* seconds */
};

/* A config status beside the library's: a server limit is passed (limit_exceeded). */
#define MLS_CFG_LIMIT 1

/* Parses and normalizes a config object. Returns 0; MLS_CFG_LIMIT; ML_ENOMEM; or another
 * negative status for a field that is wrong (invalid_monitor); err names the field. */
int mls_mconfig_parse(const json_t *obj, const struct mls_monitor_limits *lim,
                      struct mls_mconfig *out, struct mlp_error *err);
void mls_mconfig_free(struct mls_mconfig *c);

/* A duration "90s", "5m", "1h", "30d" in seconds; -1 when malformed. */
int64_t mls_duration_parse(const char *s);
/* An event time: a JSON number (Unix seconds) or an RFC 3339 string. Returns 0 or -1. */
int mls_time_parse(const json_t *v, double *out);
int mls_time_parse_text(const char *s, double *out);

struct mls_bucket {
    int64_t start;
    int32_t width; /* MLS_BUCKET or MLS_HOUR */
    struct mls_cell total;
    struct mls_class_sums *classes; /* mls_class_slots(), or NULL */
};

/* One combination of slice values, with its buckets in (start, width) order. */
/* The sum of a combo's minute buckets of one hour, added newest first from zero: a query
 * reads it instead of the sixty (the writer keeps it in step with the buckets). */
struct mls_hour {
    int64_t start;
    struct mls_cell total;
    struct mls_class_sums *classes; /* mls_class_slots(), or NULL */
};

struct mls_combo {
    char *key;     /* canonical: a JSON array of the values in key order, null when absent */
    char **values; /* num_slice_keys values, NULL when absent */
    struct mls_bucket *buckets;
    size_t num_buckets, cap_buckets;
    struct mls_hour *hours; /* of the hours that have minute buckets, by start */
    size_t num_hours, cap_hours;
    /* What this process ingested (for /metrics counters): never decreases. */
    struct mls_cell ingested;
    struct mls_class_sums *ingested_classes;
};

struct mls_monitor {
    _Atomic int refs;
    char name[MLS_MONITOR_NAME_MAX + 1];
    struct mls_mconfig cfg;
    pthread_rwlock_t lock;    /* the writer changes combos under it; readers read under it */
    struct mls_combo *combos; /* in the order of their keys (strcmp) */
    size_t num_combos, cap_combos;
    /* Late labels: the row evaluation's context (params decoded once), and what the store
     * holds now: live predictions, live labelled positions, and those per class. */
    struct mlp_request late_params;
    struct mls_late_ctx late;
    double predictions_live, positions_live;
    double *labelled_live; /* num_classes, or NULL */
};

/* All monitors, by name. */
struct mls_registry {
    pthread_rwlock_t lock;
    struct mls_monitor **items; /* sorted by name */
    size_t count, cap;
    struct mls_monitor_limits limits;
};

int mls_registry_init(struct mls_registry *g, const struct mls_monitor_limits *lim);
void mls_registry_free(struct mls_registry *g);
/* The monitor of that name with a new reference (release with mls_monitor_unref), or NULL. */
struct mls_monitor *mls_registry_get(struct mls_registry *g, const char *name);
/* Writer thread only: insert or replace (the registry takes m's reference); remove. */
int mls_registry_put(struct mls_registry *g, struct mls_monitor *m);
void mls_registry_remove(struct mls_registry *g, const char *name);

/* A monitor from a config the store holds (a restart's, another replica's): the limits of new
 * configs do not apply to what was accepted before. One reference, or NULL with err filled. */
struct mls_monitor *mls_monitor_from_stored(const struct mls_registry *g, const char *name,
                                            const char *config, char *err, size_t errlen);
/* A new monitor holding cfg (moved into it), one reference; NULL when out of memory. */
struct mls_monitor *mls_monitor_new(const char *name, struct mls_mconfig *cfg);
void mls_monitor_ref(struct mls_monitor *m);
void mls_monitor_unref(struct mls_monitor *m);

/* Canonical combo keys: a JSON array of the slice values in key order, null when absent
 * (the caller frees it); NULL when out of memory. */
char *mls_combo_key(char *const *values, int n);
/* Parses a combo key back into n values (malloc'ed, NULL for null). 0 or -1. */
int mls_combo_values(const char *key, int n, char **values);

/* Whether a name is [A-Za-z0-9_.-]{1,128}. */
int mls_monitor_name_ok(const char *name);

/* Now, in Unix seconds with their fraction: CLOCK_REALTIME read in full, the one clock of
 * event times and expiry. Not time(NULL): its whole seconds, read from the kernel's coarse
 * clock, are up to a second behind, so that the writer took labels for a prediction a second
 * past its ttl, which the predictions route (on this clock) had already refused. */
double mls_now(void);

/* Whether a prediction made at time t has expired at `now` (it takes labels until t + ttl):
 * the one rule of labels, of storing an id again and of the predictions route. */
static inline int mls_expired(double t, int64_t ttl, double now)
{
    return t + (double)ttl <= now;
}

/* The bucket of an event at time t seen at `now`: its minute, or its hour when the minute is
 * older than rollup_after (the rollup would merge it there). */
void mls_bucket_of(double t, int64_t now, int64_t rollup_after, int64_t *start, int32_t *width);

/* ---- Changes (writer thread) ----------------------------------------------------------- */

/* The combo of a key, created when absent (with `values`, copied); NULL when out of memory or
 * when creating it would pass the slice limit (*over_limit set). Call with m->lock held for
 * writing. */
struct mls_combo *mls_monitor_combo(struct mls_monitor *m, const char *key, char *const *values,
                                    unsigned max_combos, int *over_limit);
/* The combo of a key, or NULL. Pointers into m->combos last until the next combo is made. */
struct mls_combo *mls_monitor_find_combo(struct mls_monitor *m, const char *key);
/* Adds a delta into a combo's bucket (created when absent); ingested: also to the counters.
 * m->lock held for writing. Returns 0 or -1 (out of memory). */
int mls_combo_add(struct mls_monitor *m, struct mls_combo *c, int64_t start, int32_t width,
                  const struct mls_cell *total, const struct mls_class_sums *classes, int ingested);
/* Makes the hour sum of `hour` (its minute buckets summed now); 0, or -1 out of memory. */
int mls_combo_hour_make(struct mls_monitor *m, struct mls_combo *c, int64_t hour);
/* Sums the minute buckets of `hour` again into its hour sum, or drops the sum when the hour
 * has no minute bucket left; allocates nothing. m->lock held for writing. */
void mls_combo_hour_refresh(struct mls_monitor *m, struct mls_combo *c, int64_t hour);
/* The hour sum of `hour`, or NULL. */
const struct mls_hour *mls_combo_hour(const struct mls_combo *c, int64_t hour);
/* Makes every hour sum of m's combos (after a load). 0, or -1 out of memory. */
int mls_monitor_hours_rebuild(struct mls_monitor *m);

/* The index of bucket (start, width) in c, or -1. */
long mls_combo_find(const struct mls_combo *c, int64_t start, int32_t width);
/* Removes a bucket (rollup, retention). m->lock held for writing. */
void mls_combo_drop(struct mls_combo *c, size_t index);
/* Undoes what was made ready in memory for a change that was not committed: the bucket
 * (start, width) of the combo of key when it counts no observation, then the combo when it is
 * left without buckets and this process ingested nothing into it. m->lock held for writing. */
void mls_monitor_unmake(struct mls_monitor *m, const char *key, int64_t start, int32_t width);

/* ---- Queries (any thread) ---------------------------------------------------------------- */

/* GET /v1/monitors/{name}: figures at time `now`. */
void mls_monitor_write_figures(struct mls_monitor *m, int64_t now, struct mlp_buf *b);

/* GET /v1/monitors/{name}/series. filters: slice (key index, value) pairs; cls: -1 or a class. */
struct mls_series_query {
    int64_t step, from, to;
    int num_filters;
    int filter_key[MLS_MAX_SLICE_KEYS];
    const char *filter_value[MLS_MAX_SLICE_KEYS];
    int64_t cls;
};
/* Writes the points of a query the caller has checked (monitor_http.c). */
void mls_monitor_write_series(struct mls_monitor *m, const struct mls_series_query *q,
                              struct mlp_buf *b);

/* The monitor lines of /metrics. */
void mls_registry_write_metrics(struct mls_registry *g, struct mlp_buf *b);

/* A count or a time as a JSON integer (mlp_buf_number writes 3.0); others as numbers. */
void mls_json_whole(struct mlp_buf *b, double v);

/* Writes {"name": ..., "config": ...}. */
void mls_monitor_write_config(const struct mls_monitor *m, struct mlp_buf *b);

#endif /* MLS_MONITOR_H */
