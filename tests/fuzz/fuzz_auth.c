/*
 * fuzz_auth.c -- the token file's lines (mlp_token_line_parse, mlp_scopes_parse) and the
 * Authorization header's check (mls_auth_check) on any bytes.
 *
 * The input is an Authorization header value, a newline, then a token file. Invariants: a
 * line parses to a valid name and scopes within MLP_SCOPE_ALL, or to an error message; a
 * token's line formatted again (mlp_token_line_format) parses to the same name and scopes;
 * the check of the header against the file's tokens, for each scope, is "unauthorized"
 * unless the header is "Bearer <token>" with a token whose hash a line holds, then
 * "allowed" exactly when that line has the scope (admin has all), with the line's name.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "fuzz.h"

#define MAX_LINES 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *nl = memchr(text, '\n', size);
    size_t hlen = nl ? (size_t)(nl - text) : size;
    if (hlen > 1024 || memchr(text, 0, hlen))
        return 0; /* (a header value is a C string, bounded by the server's header limit) */
    char *header = malloc(hlen + 1);
    FUZZ_CHECK(header != NULL, "out of memory");
    memcpy(header, text, hlen);
    header[hlen] = 0;

    struct mls_auth a;
    memset(&a, 0, sizeof(a));
    pthread_mutex_init(&a.mu, NULL);
    a.on = 1;
    a.tokens = calloc(MAX_LINES, sizeof(*a.tokens));
    a.slots = malloc(MAX_LINES * sizeof(*a.slots));
    FUZZ_CHECK(a.tokens != NULL && a.slots != NULL, "out of memory");
    a.none = SIZE_MAX; /* (no counters: the check's decisions alone are looked at) */
    for (size_t i = 0; i < MAX_LINES; i++)
        a.slots[i] = SIZE_MAX;
    for (size_t i = nl ? hlen + 1 : size; i < size && a.count < MAX_LINES;) {
        const char *line = text + i;
        const char *end = memchr(line, '\n', size - i);
        size_t len = end ? (size_t)(end - line) : size - i;
        struct mlp_token t;
        char err[256];
        err[0] = 0;
        int r = mlp_token_line_parse(line, len, &t, err, sizeof(err));
        FUZZ_CHECK(r >= -1 && r <= 1, "parse returned %d", r);
        if (r < 0)
            FUZZ_CHECK(err[0] != 0, "an error without a message");
        if (r > 0) {
            FUZZ_CHECK(mlp_token_name_ok(t.name), "name '%s' accepted", t.name);
            FUZZ_CHECK(t.scopes && !(t.scopes & ~MLP_SCOPE_ALL), "scopes %#x", t.scopes);
            FUZZ_CHECK(!(t.scopes & MLP_SCOPE_ADMIN) || t.scopes == MLP_SCOPE_ALL,
                       "admin without every scope: %#x", t.scopes);
            char again[512];
            struct mlp_token u;
            int n = mlp_token_line_format("x", t.name, t.scopes, again, sizeof(again));
            FUZZ_CHECK(n > 0, "a parsed token's line cannot be formatted");
            FUZZ_CHECK(mlp_token_line_parse(again, (size_t)n - 1, &u, err, sizeof(err)) == 1 &&
                           !strcmp(u.name, t.name) && u.scopes == t.scopes,
                       "format then parse changed '%s' %#x", t.name, t.scopes);
            a.tokens[a.count++] = t;
        }
        i += len + 1;
    }

    /* What the check must say, from the header by hand. */
    const char *p = header;
    while (*p == ' ' || *p == '\t')
        p++;
    int bearer = !strncasecmp(p, "Bearer", 6) && (p[6] == ' ' || p[6] == '\t');
    const struct mlp_token *match = NULL;
    if (bearer) {
        p += 7;
        while (*p == ' ' || *p == '\t')
            p++;
        size_t n = strlen(p);
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        uint8_t h[32];
        mlp_sha256(p, n, h);
        for (size_t i = 0; n && n <= MLP_TOKEN_MAX && i < a.count; i++)
            if (!memcmp(a.tokens[i].hash, h, 32))
                match = match ? match : &a.tokens[i];
    }
    for (unsigned need = 1; need <= MLP_SCOPE_METRICS; need <<= 1) {
        char name[MLP_TOKEN_NAME_MAX + 1];
        size_t counter;
        enum mls_decision d = mls_auth_check(&a, header, need, name, &counter);
        mls_auth_count(&a, counter, d);
        if (!match) {
            FUZZ_CHECK(d == MLS_DECISION_UNAUTHORIZED, "decision %d for header '%.80s'", d, header);
            continue;
        }
        /* (two lines of the same hash: the server refuses such a file; here either) */
        FUZZ_CHECK(d == MLS_DECISION_ALLOWED || d == MLS_DECISION_FORBIDDEN, "decision %d", d);
        int has = 0;
        for (size_t i = 0; i < a.count; i++)
            if (!memcmp(a.tokens[i].hash, match->hash, 32) && !strcmp(a.tokens[i].name, name))
                has = (a.tokens[i].scopes & need) != 0;
        FUZZ_CHECK((d == MLS_DECISION_ALLOWED) == has, "scope %#x: decision %d, name %s", need, d,
                   name);
    }
    mls_auth_close(&a);
    free(header);
    return 0;
}
