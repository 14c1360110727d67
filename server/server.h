/*
 * server.h -- the state of one maskloss-server: configuration, the HTTP daemon, the
 * compute pool and the metrics. Owned by main(); the HTTP thread and the workers get it
 * as their closure.
 */
#ifndef MLS_SERVER_H
#define MLS_SERVER_H

#include <stdatomic.h>
#include <stddef.h>

#include <microhttpd.h>

#include "auth.h"
#include "config.h"
#include "conn.h"
#include "metrics.h"
#include "monitor.h"
#include "pool.h"
#include "quota.h"
#include "store.h"
#include "writer.h"

enum mls_state { MLS_STARTING, MLS_READY, MLS_DRAINING };

struct mls_server {
    struct mls_config cfg;
    struct MHD_Daemon *mhd;
    struct mls_pool pool;
    struct mls_metrics metrics;
    _Atomic int state; /* enum mls_state */
    char *catalogue;   /* GET /v1/losses, rendered once */
    size_t catalogue_len;
    struct mls_conns conns;
    _Atomic uint64_t inflight_bytes; /* the memory budget's part in use (--max-inflight-bytes) */
    _Atomic uint64_t log_window, log_count; /* libmicrohttpd's messages: a per-second cap */
    _Atomic uint64_t tls_failed; /* TLS handshakes that failed (counted, not logged) */
    struct mls_registry monitors; /* loaded from the store at start */
    struct mls_store *store;
    struct mls_writer writer;
    struct mls_auth auth; /* --auth-file's tokens (auth.on 0: none) */
    char *tls_cert, *tls_key; /* --tls-cert, --tls-key read (NUL-terminated PEM); NULL: HTTP */
    struct mls_quota quota;   /* --rate-limit, --rate-burst, --queue-share */
};

/*
 * Starts the HTTP daemon on cfg.bind:cfg.port (the pool must be running). Returns 0, or
 * -1 after printing why on stderr. *port receives the port actually bound.
 */
int mls_http_start(struct mls_server *s, unsigned *port);

/* Runs one job on a worker thread (the pool's run callback). */
void mls_http_run_job(struct mls_pool_item *item, uint64_t wait_ns, int cancelled, void *cls);

#endif /* MLS_SERVER_H */
