/*
 * origin.h -- the web origins allowed to call the server from a browser (--cors-origin).
 *
 * An origin is what a browser sends in its Origin header (RFC 6454): scheme://host[:port],
 * in lower case, without a path; "*" allows any. The list is kept as one string, one origin
 * a line, so that it fits the configuration's plain fields.
 */
#ifndef MLS_ORIGIN_H
#define MLS_ORIGIN_H

#include <stddef.h>

/* The longest origin: "https://", a DNS name (253 bytes at most) and ":65535". Longer ones
 * are refused in the list, and an Origin header longer is none of its. */
#define MLS_ORIGIN_MAX 267

/*
 * Appends the origins of value (separated by spaces or commas) to list, a string of cap
 * bytes: 0, or -1 with why (a static string) when one is not an origin or the list would not
 * fit; list is unchanged then. Each is kept as a browser serializes it (lower case, without
 * its scheme's default port or a port's leading zeros), or it would never match.
 */
int mls_origins_add(char *list, size_t cap, const char *value, const char **why);

/* Whether origin (an Origin header's value) is allowed by list: MLS_ORIGIN_LISTED when it is
 * one of list's, MLS_ORIGIN_ANY when only by "*", else 0. */
enum { MLS_ORIGIN_LISTED = 1, MLS_ORIGIN_ANY = 2 };
int mls_origin_allowed(const char *list, const char *origin);

#endif /* MLS_ORIGIN_H */
