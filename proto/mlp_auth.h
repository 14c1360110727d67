/*
 * mlp_auth.h -- the token file of a shared endpoint: what maskloss-server reads
 * (--auth-file) and `maskloss token new` appends to. One line a token:
 *
 *     # a comment; blank lines are skipped too
 *     <SHA-256 of the token, 64 hex digits> <name> <scope>[,<scope>...]
 *
 * The file holds only hashes: a token is shown once, when it is made, and a copy of the file
 * gives nobody a token. A token is sent as `Authorization: Bearer <token>`; the server hashes
 * what it is sent and compares the hash with every line's, in time that does not depend on
 * where they differ.
 *
 * Scopes (one source of truth: the table in auth.c):
 *   evaluate        POST /v1/loss, /v1/batch, /v2/models/{loss}/infer; the catalogue and the
 *                   v2 metadata
 *   monitor:read    GET /v1/monitors, /v1/monitors/{name}, its series
 *   monitor:write   PUT a monitor, POST observe, predictions and labels
 *   admin           DELETE a monitor, PUT one with ?force=true; and every other scope
 *   metrics         GET /metrics
 */
#ifndef MLP_AUTH_H
#define MLP_AUTH_H

#include <stddef.h>
#include <stdint.h>

enum mlp_scope {
    MLP_SCOPE_EVALUATE = 1u << 0,
    MLP_SCOPE_MONITOR_READ = 1u << 1,
    MLP_SCOPE_MONITOR_WRITE = 1u << 2,
    MLP_SCOPE_ADMIN = 1u << 3,
    MLP_SCOPE_METRICS = 1u << 4,
};
/* admin holds every scope */
#define MLP_SCOPE_ALL 0x1fu

/* A token's name: 1 to 64 of A-Z a-z 0-9 . _ - @ : (it goes into logs and metric labels). */
#define MLP_TOKEN_NAME_MAX 64
/* A token's length: the bytes hashed (what `token new` makes is 43 characters). */
#define MLP_TOKEN_MAX 256

struct mlp_token {
    uint8_t hash[32];
    char name[MLP_TOKEN_NAME_MAX + 1];
    unsigned scopes; /* enum mlp_scope bits; admin's line has all of them */
};

/* SHA-256 (FIPS 180-4) of len bytes. */
void mlp_sha256(const void *data, size_t len, uint8_t out[32]);

/* 1 when a and b (32 bytes each) are equal, read whole whatever they hold. */
int mlp_hash_equal(const uint8_t a[32], const uint8_t b[32]);

/* The name of one scope bit ("monitor:read"), or NULL. */
const char *mlp_scope_name(unsigned scope);

/* "evaluate,monitor:read" into *scopes (admin: every bit). 0, or -1 with the unknown or empty
 * item named in err. */
int mlp_scopes_parse(const char *text, size_t len, unsigned *scopes, char *err, size_t errlen);

/* One line of the file (without its newline): 1 a token (in *t), 0 blank or a comment, -1 a
 * malformed line (err says what is wrong and what is expected). */
int mlp_token_line_parse(const char *line, size_t len, struct mlp_token *t, char *err,
                         size_t errlen);

/* Whether name is a valid token name. */
int mlp_token_name_ok(const char *name);

/* The line of a token (hash hex, name, scopes as given), with its newline, into out: the
 * length, or -1 when it does not fit or name is invalid. */
int mlp_token_line_format(const char *token, const char *name, unsigned scopes, char *out,
                          size_t size);

#endif /* MLP_AUTH_H */
