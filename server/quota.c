/*
 * quota.c -- per-client token buckets and shares of the queue (quota.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quota.h"

struct mls_quota_client {
    struct mls_quota_client *next; /* in its bucket */
    double tokens;                 /* in the bucket at `at` */
    uint64_t at;                   /* ns */
    unsigned inflight;             /* requests holding a place in the share */
    unsigned char len;
    unsigned char key[MLS_QUOTA_KEY_MAX];
};

/* Sweep the whole table for entries to drop at most this often, when it is full. */
#define SWEEP_NS 100000000ull

int mls_quota_init(struct mls_quota *q, double rate, double burst, unsigned share, uint32_t seed)
{
    memset(q, 0, sizeof(*q));
    q->rate = rate;
    q->burst = burst;
    q->share = share;
    if (!mls_quota_on(q))
        return 0;
    q->buckets = calloc(MLS_QUOTA_BUCKETS, sizeof(*q->buckets));
    q->overflow = calloc(1, sizeof(*q->overflow));
    q->mu_made = q->buckets && q->overflow && !pthread_mutex_init(&q->mu, NULL);
    if (!q->mu_made) {
        mls_quota_destroy(q);
        return -1;
    }
    q->overflow->tokens = burst;
    q->seed = seed;
    return 0;
}

void mls_quota_destroy(struct mls_quota *q)
{
    if (q->buckets)
        for (size_t i = 0; i < MLS_QUOTA_BUCKETS; i++)
            for (struct mls_quota_client *c = q->buckets[i], *next; c; c = next) {
                next = c->next;
                free(c);
            }
    free(q->buckets);
    free(q->overflow);
    q->buckets = NULL;
    q->overflow = NULL;
    if (q->mu_made)
        pthread_mutex_destroy(&q->mu);
    q->mu_made = 0;
}

int mls_quota_on(const struct mls_quota *q)
{
    return q->rate > 0 || q->share > 0;
}

static struct mls_quota_client **bucket_of(struct mls_quota *q, const void *key, size_t len)
{
    const unsigned char *k = key;
    uint32_t h = 2166136261u ^ q->seed;
    for (size_t i = 0; i < len; i++)
        h = (h ^ k[i]) * 16777619u;
    return &q->buckets[h & (MLS_QUOTA_BUCKETS - 1)];
}

/* The bucket of c refilled up to now. A clock that stepped back leaves `at` where it was:
 * moved back, the time between would be counted again once the clock is past it. */
static void refill(const struct mls_quota *q, struct mls_quota_client *c, uint64_t now)
{
    if (now > c->at) {
        c->tokens += (double)(now - c->at) * 1e-9 * q->rate;
        if (c->tokens > q->burst)
            c->tokens = q->burst;
        c->at = now;
    }
}

/* Whether c holds nothing that dropping it would lose: no request in flight, and a bucket
 * that is full (or no rate limit), as a new entry's would be. */
static int droppable(const struct mls_quota *q, struct mls_quota_client *c, uint64_t now)
{
    if (c->inflight)
        return 0;
    if (q->rate <= 0)
        return 1;
    refill(q, c, now);
    return c->tokens >= q->burst;
}

static void sweep(struct mls_quota *q, uint64_t now)
{
    for (size_t i = 0; i < MLS_QUOTA_BUCKETS; i++)
        for (struct mls_quota_client **p = &q->buckets[i]; *p;) {
            struct mls_quota_client *c = *p;
            if (droppable(q, c, now)) {
                *p = c->next;
                free(c);
                q->num_clients--;
            } else {
                p = &c->next;
            }
        }
    q->last_sweep = now;
}

/* The entry of key, made when absent: the shared overflow entry when the table is full (but
 * for a token's key) or memory is short. */
static struct mls_quota_client *client_of(struct mls_quota *q, const void *key, size_t len,
                                          uint64_t now)
{
    if (len > MLS_QUOTA_KEY_MAX)
        len = MLS_QUOTA_KEY_MAX; /* (never: the callers' keys are shorter) */
    struct mls_quota_client **b = bucket_of(q, key, len);
    for (struct mls_quota_client *c = *b; c; c = c->next)
        if (c->len == len && !memcmp(c->key, key, len))
            return c;
    if (q->num_clients >= MLS_QUOTA_MAX_CLIENTS &&
        !(len && *(const unsigned char *)key == MLS_QUOTA_KEY_TOKEN) &&
        (now - q->last_sweep < SWEEP_NS ||
         (sweep(q, now), q->num_clients >= MLS_QUOTA_MAX_CLIENTS)))
        return q->overflow;
    struct mls_quota_client *c = calloc(1, sizeof(*c));
    if (!c)
        return q->overflow;
    c->tokens = q->burst;
    c->at = now;
    c->len = (unsigned char)len;
    memcpy(c->key, key, len);
    c->next = *b;
    *b = c;
    q->num_clients++;
    return c;
}

enum mls_quota_verdict mls_quota_take(struct mls_quota *q, const void *key, size_t len,
                                      uint64_t now_ns, int worker, struct mls_quota_client **held,
                                      unsigned *retry_after, double *limit)
{
    *held = NULL;
    if (!mls_quota_on(q) || (!worker && q->rate <= 0))
        return MLS_QUOTA_OK;
    enum mls_quota_verdict v = MLS_QUOTA_OK;
    pthread_mutex_lock(&q->mu);
    struct mls_quota_client *c = client_of(q, key, len, now_ns);
    /* The share first: a request refused for it takes nothing from the bucket. */
    if (worker && q->share && c->inflight >= q->share) {
        atomic_fetch_add_explicit(&q->refused_share, 1, memory_order_relaxed);
        *retry_after = 1; /* (no way to tell when one of them is answered) */
        *limit = q->share;
        v = MLS_QUOTA_SHARE;
        goto out;
    }
    if (q->rate > 0) {
        refill(q, c, now_ns);
        if (c->tokens < 1.0) {
            atomic_fetch_add_explicit(&q->refused_rate, 1, memory_order_relaxed);
            double wait = ceil((1.0 - c->tokens) / q->rate);
            *retry_after = wait < 1 ? 1u : wait > 86400 ? 86400u : (unsigned)wait;
            *limit = q->rate;
            v = MLS_QUOTA_RATE;
            goto out;
        }
        c->tokens -= 1.0;
    }
    if (worker && q->share) {
        c->inflight++;
        *held = c;
    }
out:
    pthread_mutex_unlock(&q->mu);
    return v;
}

void mls_quota_release(struct mls_quota *q, struct mls_quota_client *held)
{
    if (!held)
        return;
    /* Under the mutex: a sweep on another HTTP thread reads inflight to decide whether the
     * entry may be dropped. */
    pthread_mutex_lock(&q->mu);
    held->inflight--;
    pthread_mutex_unlock(&q->mu);
}

void mls_quota_write_metrics(struct mls_quota *q, struct mlp_buf *b)
{
    if (!mls_quota_on(q))
        return;
    char line[512];
    snprintf(line, sizeof(line),
             "# HELP maskloss_quota_refused_total Requests refused with 429 by a client's "
             "quota: its rate (--rate-limit) or its share of the queue (--queue-share).\n"
             "# TYPE maskloss_quota_refused_total counter\n"
             "maskloss_quota_refused_total{reason=\"rate\"} %llu\n"
             "maskloss_quota_refused_total{reason=\"queue_share\"} %llu\n",
             (unsigned long long)atomic_load_explicit(&q->refused_rate, memory_order_relaxed),
             (unsigned long long)atomic_load_explicit(&q->refused_share, memory_order_relaxed));
    mlp_buf_puts(b, line);
}
