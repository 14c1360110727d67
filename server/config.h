/*
 * config.h -- maskloss-server settings: command-line flags, each with an environment
 * variable, and their defaults.
 */
#ifndef MLS_CONFIG_H
#define MLS_CONFIG_H

#include <stdint.h>
#include <stdio.h>

struct mls_config {
    char bind[128];                  /* address to listen on (numeric IPv4/IPv6 or a host name) */
    unsigned port;                   /* 0: pick a free port */
    unsigned workers;                /* compute threads */
    unsigned http_threads;           /* libmicrohttpd's threads, each answering small requests */
    unsigned queue_depth;            /* jobs that may wait for a worker; more get 503 */
    uint64_t max_body_bytes;         /* request bodies above this get 413 */
    long long max_elements;          /* elements per input tensor; 0: no limit */
    double request_timeout;          /* seconds a job may wait in the queue before 503 */
    double connection_timeout;       /* seconds: idle connections, and receiving one request */
    double drain_timeout;            /* seconds allowed for SIGTERM/SIGINT draining */
    int access_log;                  /* one JSON line per request on stderr */
    unsigned max_connections;        /* open connections in all; more are closed at once */
    unsigned max_connections_per_ip; /* open connections from one address; 0: no limit */
    double header_timeout;           /* seconds from a connection's opening to its first
                                        request's complete headers */
    uint64_t max_inflight_bytes;     /* memory all requests in flight may hold together */
    uint64_t max_inflight_bytes_per_ip; /* the part of it one client address may hold */
    char state[4096]; /* the monitors' SQLite file (":memory:" keeps nothing) or PostgreSQL URL */
    unsigned state_wait;                /* seconds a PostgreSQL state may take to answer at start */
    unsigned state_timeout;             /* seconds a PostgreSQL call may take */
    unsigned max_monitors;              /* monitors the server holds */
    unsigned max_classes;               /* classes per monitor */
    unsigned max_slice_values;          /* combinations of slice values per monitor */
    uint64_t state_cache;               /* bytes of the state's pages SQLite keeps in memory */
    uint64_t state_mmap;                /* bytes of the state file SQLite reads through a map */
    long long rollup_after;             /* seconds: minute buckets older than this become hours */
    char auth_file[4096];               /* tokens with scopes (auth.h); "": no auth */
    int insecure_no_auth;               /* listen beyond loopback without --auth-file */
    int metrics_open;                   /* /metrics needs no token */
    char tls_cert[4096];                /* PEM: the certificate (chain); "": plain HTTP */
    char tls_key[4096];                 /* PEM: its private key */
    double rate_limit;                  /* requests a second per client; 0: none (quota.h) */
    unsigned rate_burst;                /* its bucket's size; 0: one second's worth */
    unsigned queue_share;               /* requests in flight per client; 0: the default */
    char cors_origins[4096];            /* origins allowed by CORS, one a line (origin.h) */
};

/* The memory budget when none is given: half of the machine's memory, or of the cgroup's limit
 * when that is lower (a container). */
uint64_t mls_config_default_inflight_bytes(void);

/* Outcomes of mls_config_parse(). */
enum { MLS_CONFIG_OK = 0, MLS_CONFIG_EXIT = 1, MLS_CONFIG_ERROR = -1 };

/*
 * Fills c from the defaults, then the MASKLOSS_* environment, then argv (later wins).
 * Returns MLS_CONFIG_OK; MLS_CONFIG_EXIT after printing --help or --version on out; or
 * MLS_CONFIG_ERROR after printing what was wrong on err.
 */
int mls_config_parse(struct mls_config *c, int argc, char **argv, FILE *out, FILE *err);

#endif /* MLS_CONFIG_H */
