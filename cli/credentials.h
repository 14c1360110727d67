/*
 * credentials.h -- what `maskloss monitor` proves itself with: a bearer token (--token,
 * --token-file, $MASKLOSS_TOKEN) and the CA file it trusts for https:// (--cacert).
 *
 * No function here ever writes a token into a message: a message may reach a terminal, a CI
 * log or a bug report.
 */
#ifndef CREDENTIALS_H
#define CREDENTIALS_H

#include <stddef.h>

#include "mlp_auth.h"

/* The longest token: the server takes no longer one (proto/mlp_auth.h). */
#define CRED_TOKEN_MAX MLP_TOKEN_MAX
/* A CA file: a system bundle is ~200 KB; far above it, below anything a mistake could be. */
#define CRED_CAFILE_MAX ((size_t)16 << 20)

enum cred_error {
    CRED_EREAD = -1,    /* the file cannot be read (missing, unreadable, too large, memory) */
    CRED_EINVALID = -2, /* what it holds cannot be sent as a token */
};

/*
 * Why token cannot go into "Authorization: Bearer <token>": NULL when it can. A token is 1 to
 * CRED_TOKEN_MAX bytes of printable ASCII without spaces (RFC 6750's b64token is a subset): a
 * line break would split the header and start another, and a space or a byte beyond ASCII may
 * be changed on the way (by a proxy) into another token. The answer is a static string that
 * says what is wrong without repeating any of the token.
 */
const char *cred_token_problem(const char *token);

/*
 * The whole of path, of at most max bytes, NUL-terminated (*len: its bytes without the NUL):
 * a malloc'd buffer (free it), or NULL with *why set (a static string or strerror's). Reads
 * pipes as well as regular files: `--token-file <(pass show maskloss)` is a pipe, and keeps the
 * token out of every process's command line.
 */
char *cred_read_file(const char *path, size_t max, size_t *len, const char **why);

/*
 * The token in the file at path into token (CRED_TOKEN_MAX + 1 bytes): the file holds the
 * token alone, one line break after it allowed ("\n" or "\r\n", as `echo` or an editor leaves
 * it). Returns 0; CRED_EREAD or CRED_EINVALID with *why set (static: never the file's text).
 */
int cred_token_from_file(const char *path, char token[CRED_TOKEN_MAX + 1], const char **why);

#endif /* CREDENTIALS_H */
