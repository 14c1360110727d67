/*
 * auth.c -- bearer tokens with scopes (auth.h).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "readfile.h"

static const char *const decision_names[MLS_DECISION_COUNT] = {"open", "allowed", "unauthorized",
                                                               "forbidden", "rate_limited"};

const char *mls_decision_name(enum mls_decision d)
{
    return d < MLS_DECISION_COUNT ? decision_names[d] : "?";
}

/* The file's tokens, or NULL with err filled. */
static struct mlp_token *read_file(const char *path, size_t *count, char *err, size_t errlen)
{
    size_t len;
    const char *cannot;
    char *text = mls_read_file(path, MLS_AUTH_MAX_FILE, &len, &cannot);
    if (!text) {
        snprintf(err, errlen, "cannot read the auth file %s (at most %u bytes): %s", path,
                 MLS_AUTH_MAX_FILE, cannot);
        return NULL;
    }
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    struct mlp_token *t =
        calloc(lines < MLS_AUTH_MAX_TOKENS ? lines : MLS_AUTH_MAX_TOKENS, sizeof(*t));
    size_t n = 0, line = 0;
    for (size_t i = 0; t && i < len;) {
        size_t j = i;
        while (j < len && text[j] != '\n')
            j++;
        line++;
        char why[256];
        struct mlp_token tok;
        int r = j - i > 512 ? -1 : mlp_token_line_parse(text + i, j - i, &tok, why, sizeof(why));
        if (j - i > 512)
            snprintf(why, sizeof(why), "a line is at most 512 bytes");
        if (r < 0) {
            snprintf(err, errlen, "the auth file %s, line %zu: %s", path, line, why);
            free(t);
            free(text);
            return NULL;
        }
        if (r > 0) {
            for (size_t k = 0; k < n; k++) {
                if (!memcmp(t[k].hash, tok.hash, sizeof(tok.hash)) ||
                    !strcmp(t[k].name, tok.name)) {
                    snprintf(err, errlen,
                             "the auth file %s, line %zu: token %s is there twice (its %s): a "
                             "token and a name are on one line each",
                             path, line, tok.name, strcmp(t[k].name, tok.name) ? "hash" : "name");
                    free(t);
                    free(text);
                    return NULL;
                }
            }
            if (n == MLS_AUTH_MAX_TOKENS) {
                snprintf(err, errlen, "the auth file %s holds more than %d tokens", path,
                         MLS_AUTH_MAX_TOKENS);
                free(t);
                free(text);
                return NULL;
            }
            t[n++] = tok;
        }
        i = j + 1;
    }
    free(text);
    if (!t)
        snprintf(err, errlen, "cannot read the auth file %s: out of memory", path);
    *count = n;
    return t;
}

static size_t find_count(const struct mls_auth *a, const char *name)
{
    size_t i = 0;
    while (i < a->num_counts && strcmp(a->counts[i].name, name))
        i++;
    return i;
}

/* The counter of a name, made when absent (under a->mu, or before any thread): its index, or
 * SIZE_MAX out of memory. */
static size_t counter_of(struct mls_auth *a, const char *name)
{
    size_t i = find_count(a, name);
    if (i == a->num_counts && a->num_counts >= MLS_AUTH_MAX_COUNTS - 1) {
        name = "(other)"; /* (names renamed reload after reload, without end) */
        i = find_count(a, name);
    }
    if (i == a->num_counts) {
        if (a->num_counts == a->cap_counts) {
            size_t cap = a->cap_counts ? a->cap_counts * 2 : 16;
            struct mls_auth_count *c = realloc(a->counts, cap * sizeof(*c));
            if (!c)
                return SIZE_MAX; /* (not counted: out of memory) */
            a->counts = c;
            a->cap_counts = cap;
        }
        memset(&a->counts[i], 0, sizeof(a->counts[i]));
        snprintf(a->counts[i].name, sizeof(a->counts[i].name), "%s", name);
        a->num_counts++;
    }
    return i;
}

/* The counters of n tokens (resolved once, at a load: a request then counts in O(1)); NULL
 * out of memory. */
static size_t *slots_of(struct mls_auth *a, const struct mlp_token *t, size_t n)
{
    size_t *slots = malloc((n ? n : 1) * sizeof(*slots));
    for (size_t i = 0; slots && i < n; i++)
        slots[i] = counter_of(a, t[i].name);
    return slots;
}

int mls_auth_open(struct mls_auth *a, const char *path, char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    if (strlen(path) >= sizeof(a->path)) {
        snprintf(err, errlen, "the auth file's path is longer than %zu bytes", sizeof(a->path) - 1);
        return -1;
    }
    pthread_mutex_init(&a->mu, NULL);
    snprintf(a->path, sizeof(a->path), "%s", path);
    if (!(a->tokens = read_file(path, &a->count, err, errlen))) {
        pthread_mutex_destroy(&a->mu);
        return -1;
    }
    a->none = counter_of(a, "(none)");
    if (!(a->slots = slots_of(a, a->tokens, a->count))) {
        snprintf(err, errlen, "out of memory reading the auth file %s", path);
        free(a->tokens);
        free(a->counts);
        pthread_mutex_destroy(&a->mu);
        memset(a, 0, sizeof(*a));
        return -1;
    }
    a->on = 1;
    return 0;
}

int mls_auth_reload(struct mls_auth *a, size_t *count, char *err, size_t errlen)
{
    size_t n;
    struct mlp_token *t = read_file(a->path, &n, err, errlen);
    if (!t)
        return -1;
    pthread_mutex_lock(&a->mu);
    size_t *slots = slots_of(a, t, n);
    if (!slots) {
        pthread_mutex_unlock(&a->mu);
        free(t);
        snprintf(err, errlen, "out of memory reading the auth file %s", a->path);
        return -1;
    }
    struct mlp_token *old = a->tokens;
    size_t *old_slots = a->slots;
    a->tokens = t;
    a->slots = slots;
    a->count = n;
    pthread_mutex_unlock(&a->mu);
    free(old);
    free(old_slots);
    *count = n;
    return 0;
}

void mls_auth_close(struct mls_auth *a)
{
    if (a->on)
        pthread_mutex_destroy(&a->mu);
    free(a->tokens);
    free(a->slots);
    free(a->counts);
    memset(a, 0, sizeof(*a));
}

unsigned mls_auth_scope_of(enum mls_route route, const char *method, int force, int metrics_open)
{
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    switch (route) {
    case MLS_ROUTE_HEALTHZ:
    case MLS_ROUTE_READYZ:
    case MLS_ROUTE_V2_LIVE:
    case MLS_ROUTE_V2_READY:
    case MLS_ROUTE_OTHER: /* 404 whoever asks */
    case MLS_ROUTE_UI:    /* the status page's files: constant, no data */
        return 0;
    case MLS_ROUTE_METRICS:
    case MLS_ROUTE_STATS: /* the same counters as /metrics */
        return metrics_open ? 0 : MLP_SCOPE_METRICS;
    case MLS_ROUTE_LOSS:
    case MLS_ROUTE_BATCH:
    case MLS_ROUTE_LOSSES:
    case MLS_ROUTE_V2_INFER:
    case MLS_ROUTE_V2_MODEL:
    case MLS_ROUTE_V2_MODEL_READY:
    case MLS_ROUTE_V2_SERVER:
        return MLP_SCOPE_EVALUATE;
    case MLS_ROUTE_MONITOR:
        if (!strcmp(method, "DELETE") || (force && !get))
            return MLP_SCOPE_ADMIN;
        return get ? MLP_SCOPE_MONITOR_READ : MLP_SCOPE_MONITOR_WRITE;
    case MLS_ROUTE_MONITORS:
    case MLS_ROUTE_MONITOR_SERIES:
    case MLS_ROUTE_MONITOR_OBSERVE:
    case MLS_ROUTE_MONITOR_PREDICTIONS:
    case MLS_ROUTE_MONITOR_LABELS:
        return get ? MLP_SCOPE_MONITOR_READ : MLP_SCOPE_MONITOR_WRITE;
    default:
        return MLP_SCOPE_ADMIN;
    }
}

/* The token of "Bearer <token>" (the scheme in any case, RFC 9110 11.1), or NULL. */
static const char *bearer(const char *v, size_t *len)
{
    while (*v == ' ' || *v == '\t')
        v++;
    if (strncasecmp(v, "Bearer", 6) || (v[6] != ' ' && v[6] != '\t'))
        return NULL;
    v += 6;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (!n || n > MLP_TOKEN_MAX)
        return NULL;
    *len = n;
    return v;
}

enum mls_decision mls_auth_check(struct mls_auth *a, const char *authorization, unsigned need,
                                 char name[MLP_TOKEN_NAME_MAX + 1], size_t *counter)
{
    name[0] = 0;
    *counter = SIZE_MAX;
    if (!a->on || !need)
        return MLS_DECISION_OPEN;
    size_t len = 0;
    const char *token = authorization ? bearer(authorization, &len) : NULL;
    uint8_t h[32];
    /* (no token: a hash no line holds, as good as none, and the same path) */
    mlp_sha256(token ? token : "", token ? len : 0, h);
    pthread_mutex_lock(&a->mu);
    /* Every line is compared whole, the match or not: neither where a hash differs nor which
     * line matched shows in the time taken. */
    size_t found = a->count;
    for (size_t i = 0; i < a->count; i++) {
        size_t eq = (size_t)mlp_hash_equal(a->tokens[i].hash, h);
        found = eq * i + (1 - eq) * found;
    }
    unsigned scopes = 0;
    if (found < a->count) {
        scopes = a->tokens[found].scopes;
        memcpy(name, a->tokens[found].name, MLP_TOKEN_NAME_MAX + 1);
    }
    if (!token)
        name[0] = 0;
    enum mls_decision d = !name[0]                  ? MLS_DECISION_UNAUTHORIZED
                          : (scopes & need) == need ? MLS_DECISION_ALLOWED
                                                    : MLS_DECISION_FORBIDDEN;
    *counter = name[0] ? a->slots[found] : a->none;
    pthread_mutex_unlock(&a->mu);
    return d;
}

size_t mls_auth_none(const struct mls_auth *a)
{
    return a->on ? a->none : SIZE_MAX; /* (set at open, never changed) */
}

void mls_auth_count(struct mls_auth *a, size_t counter, enum mls_decision d)
{
    if (!a->on || counter == SIZE_MAX)
        return;
    pthread_mutex_lock(&a->mu);
    if (counter < a->num_counts && d < MLS_DECISION_COUNT)
        a->counts[counter].n[d]++;
    pthread_mutex_unlock(&a->mu);
}

void mls_auth_write_metrics(struct mls_auth *a, struct mlp_buf *b)
{
    if (!a->on)
        return;
    mlp_buf_puts(b, "# HELP maskloss_auth_requests_total Requests that needed a token, by the "
                    "token's name ((none): no token, or one the auth file does not hold) and "
                    "decision.\n# TYPE maskloss_auth_requests_total counter\n");
    pthread_mutex_lock(&a->mu);
    for (size_t i = 0; i < a->num_counts; i++) {
        for (int d = MLS_DECISION_ALLOWED; d < MLS_DECISION_COUNT; d++) {
            char line[160];
            /* (names are of A-Z a-z 0-9 . _ - @ : and parentheses: nothing to escape) */
            snprintf(line, sizeof(line),
                     "maskloss_auth_requests_total{token=\"%s\",decision=\"%s\"} %llu\n",
                     a->counts[i].name, decision_names[d], (unsigned long long)a->counts[i].n[d]);
            mlp_buf_puts(b, line);
        }
    }
    pthread_mutex_unlock(&a->mu);
}
