/*
 * auth.h -- bearer tokens with scopes (--auth-file; the file's format is mlp_auth.h): who may
 * do what on a shared endpoint.
 *
 * The table of tokens is read at start and again at each SIGHUP, on the loop thread; the HTTP
 * threads check every request's token against it (and count decisions), under the same mutex
 * as the reload, which makes the new table visible to each. A reload replaces the table whole under a
 * mutex, so a request sees the old table or the new one, never a mix; a reload that fails
 * (the file unreadable or malformed) keeps the table that was serving, and says why.
 *
 * A request's scope comes from its route and method alone (mls_auth_scope_of): the health
 * probes need none; the rest need a token with the scope, or admin.
 */
#ifndef MLS_AUTH_H
#define MLS_AUTH_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "mlp.h"
#include "mlp_auth.h"

/* What was decided for a request (also an access-log field and a metric label). */
enum mls_decision {
    MLS_DECISION_OPEN,         /* auth off, or a route that needs no token */
    MLS_DECISION_ALLOWED,      /* a token with the scope */
    MLS_DECISION_UNAUTHORIZED, /* no token, or one the file does not hold: 401 */
    MLS_DECISION_FORBIDDEN,    /* a known token without the scope: 403 */
    MLS_DECISION_RATE_LIMITED, /* over the client's quota (quota.h): 429 */
    MLS_DECISION_COUNT
};

/* The decision's name ("allowed"; "open" for MLS_DECISION_OPEN). */
const char *mls_decision_name(enum mls_decision d);

/* The most tokens a file may hold, and the longest file read (a line is at most 512 bytes). */
#define MLS_AUTH_MAX_TOKENS 10000
#define MLS_AUTH_MAX_FILE (8u << 20)
/* Names counted for /metrics, over all reloads; the requests of names beyond are counted
 * under "(other)". */
#define MLS_AUTH_MAX_COUNTS (2 * MLS_AUTH_MAX_TOKENS)

/* Requests by token name and decision (/metrics); kept across reloads. */
struct mls_auth_count {
    char name[MLP_TOKEN_NAME_MAX + 1]; /* "(none)": no token, or one the file does not hold */
    uint64_t n[MLS_DECISION_COUNT];
};

struct mls_auth {
    pthread_mutex_t mu;
    struct mlp_token *tokens; /* under mu */
    size_t count;
    struct mls_auth_count *counts; /* under mu; at most MLS_AUTH_MAX_COUNTS */
    size_t num_counts, cap_counts;
    size_t *slots; /* under mu: slots[i], the counter of tokens[i] (SIZE_MAX: none) */
    size_t none;   /* the counter of "(none)" */
    char path[4096];
    int on; /* --auth-file given */
};

/* Reads path into a: 0, or -1 with err naming the file, the line and what is wrong. */
int mls_auth_open(struct mls_auth *a, const char *path, char *err, size_t errlen);
/* Reads the file again (SIGHUP): 0 with the number of tokens in *count, or -1 with err, the
 * table unchanged. */
int mls_auth_reload(struct mls_auth *a, size_t *count, char *err, size_t errlen);
void mls_auth_close(struct mls_auth *a);

/* The scope a request needs (enum mlp_scope), 0 when it needs none. force: the request asks
 * ?force=true (a PUT that replaces a monitor and clears its data: admin, as DELETE);
 * metrics_open: /metrics needs none (--metrics-open). */
unsigned mls_auth_scope_of(enum mls_route route, const char *method, int force, int metrics_open);

/* The decision for a request that needs scope `need` and sent the Authorization header
 * `authorization` (NULL when absent); the token's name into name when the token is known,
 * and into *counter the counter of its requests for mls_auth_count (SIZE_MAX: none). */
enum mls_decision mls_auth_check(struct mls_auth *a, const char *authorization, unsigned need,
                                 char name[MLP_TOKEN_NAME_MAX + 1], size_t *counter);
/* Counts a request's final decision (its check's, or a quota's refusal after it) under the
 * counter mls_auth_check gave. Counters are never removed, so the index stays valid across
 * reloads. */
void mls_auth_count(struct mls_auth *a, size_t counter, enum mls_decision d);
/* The counter of "(none)": requests without a token, or with one the file does not hold
 * (SIZE_MAX when tokens are off). */
size_t mls_auth_none(const struct mls_auth *a);

/* maskloss_auth_requests_total{token, decision}, when tokens are on. */
void mls_auth_write_metrics(struct mls_auth *a, struct mlp_buf *b);

#endif /* MLS_AUTH_H */
