/*
 * state_url.h -- --state: a SQLite file or a PostgreSQL connection string, and the password a
 * connection string may hold, which nothing the server prints or answers may show.
 */
#ifndef MLS_STATE_URL_H
#define MLS_STATE_URL_H

#include <stddef.h>

/*
 * Whether --state names a PostgreSQL database: a postgresql:// or postgres:// URI, or a libpq
 * keyword/value string ("host=db dbname=maskloss"); anything else is a SQLite file.
 */
int mls_store_is_pg(const char *state);
/* --state as logs may show it: a password in it replaced by "***". */
void mls_store_redact(const char *state, char *out, size_t size);
/*
 * The password a connection string holds, as written (raw) and as libpq reads it (plain:
 * percent-decoded in a URI, unquoted and unescaped in keyword/value form), each at most n - 1
 * bytes; "" when it has none. Both are taken out of what the server prints: libpq's own
 * messages may quote the string.
 */
void mls_state_password(const char *conninfo, char *raw, char *plain, size_t n);
/* Replaces every occurrence of secret in text (a string in size bytes) with "***". */
void mls_state_scrub(char *text, size_t size, const char *secret);

#endif /* MLS_STATE_URL_H */
