/*
 * quota.h -- per-client quotas on a shared endpoint: a request rate (--rate-limit,
 * --rate-burst) and a share of the worker queue (--queue-share).
 *
 * A client is a token's name when the request carries an accepted token, its address (an
 * IPv6 /64 counting as one, as in conn.h) otherwise. Each has a token bucket: it holds at
 * most `burst` requests, refills at `rate` a second, and a request takes one; an empty bucket
 * is 429 with the seconds until it holds one again (Retry-After). Each also counts its
 * requests in flight that need a worker (from their headers to their answer's completion);
 * one more than `share` is 429 too, so that one client's flood leaves the rest of the queue
 * to the others. Both are decided from the headers, before a byte of the body is read.
 *
 * A client's entry is kept while it has requests in flight or its bucket is not full (it
 * would refill to the same state anyway): at most MLS_QUOTA_MAX_CLIENTS entries, beyond
 * which new clients share one entry (a flood of addresses cannot grow the table), except
 * tokens (MLS_QUOTA_KEY_TOKEN).
 *
 * Threads: mls_quota_take and mls_quota_release run on libmicrohttpd's threads (the handler
 * and its completion callback; --http-threads of them, and a connection's request may be
 * released by another thread than took another client's), so the table is behind a mutex,
 * held for a lookup and a few additions; mls_quota_write_metrics reads counters only.
 */
#ifndef MLS_QUOTA_H
#define MLS_QUOTA_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "mlp.h"

/* The most clients with an entry, and the buckets of their table (a power of two). */
#define MLS_QUOTA_MAX_CLIENTS 65536
#define MLS_QUOTA_BUCKETS 16384
/* The longest key: a token's name (MLP_TOKEN_NAME_MAX) or an address's 16 bytes, tagged. */
#define MLS_QUOTA_KEY_MAX 72
/* The tag (first byte) of a token's key. Tokens are as many as --auth-file's lines, not as
 * many as a client can make up: theirs always get an entry of their own, or a flood of
 * addresses (requests that need no token) filling the table would put every token not seen
 * yet in the shared entry, with the flood. */
#define MLS_QUOTA_KEY_TOKEN 't'
/* The tag of an address's key (then its 16 bytes, conn.h's mls_conn_address). */
#define MLS_QUOTA_KEY_ADDRESS 'a'

struct mls_quota_client;

struct mls_quota {
    double rate;    /* requests a second a client's bucket refills; 0: no rate limit */
    double burst;   /* the most its bucket holds */
    unsigned share; /* requests needing a worker a client may have in flight; 0: no share */
    pthread_mutex_t mu;                /* the table and its entries (when on) */
    int mu_made;                       /* mu initialised: destroy may run without an init */
    struct mls_quota_client **buckets; /* NULL when both are off */
    struct mls_quota_client *overflow; /* the entry of clients beyond MLS_QUOTA_MAX_CLIENTS */
    unsigned num_clients;
    uint64_t last_sweep; /* ns: when the full table was last swept for entries to drop */
    uint32_t seed;
    _Atomic uint64_t refused_rate, refused_share; /* /metrics */
};

/* What mls_quota_take decided. */
enum mls_quota_verdict { MLS_QUOTA_OK, MLS_QUOTA_RATE, MLS_QUOTA_SHARE };

/* rate 0 and share 0: quotas off, every take is MLS_QUOTA_OK. seed: of the table's hash
 * (keys come from clients: make it unpredictable). Returns 0, or -1 out of memory. */
int mls_quota_init(struct mls_quota *q, double rate, double burst, unsigned share, uint32_t seed);
void mls_quota_destroy(struct mls_quota *q);
/* Whether any quota is on. */
int mls_quota_on(const struct mls_quota *q);

/*
 * The quotas for one request of the client `key` (len bytes) at now_ns (uv_hrtime()):
 * worker says whether it needs a worker (counts against the share). On MLS_QUOTA_OK with
 * *held set, the request holds a place in the share until mls_quota_release(*held). On a
 * refusal, *retry_after is the whole seconds to wait (at least 1), and *limit the client's
 * limit that was reached (requests a second, or requests in flight).
 */
enum mls_quota_verdict mls_quota_take(struct mls_quota *q, const void *key, size_t len,
                                      uint64_t now_ns, int worker, struct mls_quota_client **held,
                                      unsigned *retry_after, double *limit);
/* The request that took *held is complete. */
void mls_quota_release(struct mls_quota *q, struct mls_quota_client *held);

/* maskloss_quota_refused_total{reason} when quotas are on (any thread). */
void mls_quota_write_metrics(struct mls_quota *q, struct mlp_buf *b);

#endif /* MLS_QUOTA_H */
