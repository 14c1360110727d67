/*
 * state_url.c -- what --state names, and its password kept out of what the server prints
 * (state_url.h).
 */
#include <stdio.h>
#include <string.h>

#include "state_url.h"

int mls_store_is_pg(const char *state)
{
    if (!strncmp(state, "postgresql://", 13) || !strncmp(state, "postgres://", 11))
        return 1;
    /* A keyword/value connection string: "host=... dbname=..." */
    size_t k = strspn(state, "abcdefghijklmnopqrstuvwxyz_");
    return k > 0 && state[k + strspn(state + k, " ")] == '=';
}

void mls_state_scrub(char *text, size_t size, const char *secret)
{
    size_t n = strlen(secret);
    if (!n || !size)
        return;
    for (char *p = text; (p = strstr(p, secret)) != NULL;) {
        size_t at = (size_t)(p - text), tail = strlen(p + n);
        if (at + 3 >= size) { /* (no room for the mark: cut here) */
            *p = '\0';
            return;
        }
        if (at + 3 + tail >= size)
            tail = size - 1 - at - 3;
        memmove(p + 3, p + n, tail);
        p[3 + tail] = '\0';
        memcpy(p, "***", 3);
        p += 3;
    }
}

static int hex(int c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Where the passwords of a connection string are (offsets and lengths of their values as
 * written, in order: libpq takes the last); their count, at most max. */
static size_t spans(const char *c, size_t *at, size_t *len, size_t max)
{
    size_t k = 0;
    const char *scheme = strstr(c, "://");
    if (scheme && mls_store_is_pg(c)) {
        const char *host = scheme + 3, *end = host + strcspn(host, "/?");
        const char *atsign = NULL;
        for (const char *q = host; q < end; q++)
            if (*q == '@')
                atsign = q;
        const char *colon = atsign ? memchr(host, ':', (size_t)(atsign - host)) : NULL;
        if (colon && k < max) {
            at[k] = (size_t)(colon + 1 - c);
            len[k++] = (size_t)(atsign - colon - 1);
        }
        for (const char *q = strchr(end, '?'); q && *q && k < max; q += strcspn(q + 1, "&") + 1) {
            if (!strncmp(q + 1, "password=", 9)) {
                at[k] = (size_t)(q + 10 - c);
                len[k++] = strcspn(q + 10, "&");
            }
        }
        return k;
    }
    /* key = value pairs, values bare or in single quotes, with backslash escapes */
    const char *p = c;
    while (*p && k < max) {
        p += strspn(p, " \t\n");
        const char *key = p;
        p += strspn(p, "abcdefghijklmnopqrstuvwxyz_");
        size_t klen = (size_t)(p - key);
        p += strspn(p, " \t\n");
        if (!klen || *p != '=')
            break;
        p++;
        p += strspn(p, " \t\n");
        const char *val = p;
        if (*p == '\'') {
            for (p++; *p && *p != '\''; p++)
                if (*p == '\\' && p[1])
                    p++;
            if (*p)
                p++;
        } else {
            for (; *p && !strchr(" \t\n", *p); p++)
                if (*p == '\\' && p[1])
                    p++;
        }
        if (klen == 8 && !strncmp(key, "password", 8)) {
            at[k] = (size_t)(val - c);
            len[k++] = (size_t)(p - val);
        }
    }
    return k;
}

void mls_state_password(const char *conninfo, char *raw, char *plain, size_t n)
{
    raw[0] = plain[0] = '\0';
    size_t at[8], len[8], k = spans(conninfo, at, len, 8);
    if (!k || !n)
        return;
    const char *v = conninfo + at[k - 1];
    size_t l = len[k - 1], o = 0;
    snprintf(raw, n, "%.*s", (int)l, v);
    if (strstr(conninfo, "://")) { /* percent-encoded */
        for (size_t i = 0; i < l && o + 1 < n; i++) {
            int h1, h2;
            if (v[i] == '%' && i + 2 < l && (h1 = hex(v[i + 1])) >= 0 &&
                (h2 = hex(v[i + 2])) >= 0) {
                plain[o++] = (char)(h1 * 16 + h2);
                i += 2;
            } else {
                plain[o++] = v[i];
            }
        }
    } else { /* quoted, escaped */
        size_t i = v[0] == '\'' ? 1 : 0, stop = v[0] == '\'' && l > 1 ? l - 1 : l;
        for (; i < stop && o + 1 < n; i++) {
            if (v[i] == '\\' && i + 1 < stop)
                i++;
            plain[o++] = v[i];
        }
    }
    plain[o] = '\0';
}

void mls_store_redact(const char *state, char *out, size_t size)
{
    snprintf(out, size, "%s", state);
    if (!mls_store_is_pg(state))
        return;
    /* Every password written in it, the last first (the offsets before it stay), then anything
     * of the effective one left (a copy elsewhere in the string). */
    size_t at[8], len[8], k = spans(out, at, len, 8);
    while (k-- > 0) {
        if (at[k] + len[k] > strlen(out))
            continue;
        char tail[4096];
        snprintf(tail, sizeof(tail), "%s", out + at[k] + len[k]);
        snprintf(out + at[k], size - at[k], "***%s", tail);
    }
    char raw[1024], plain[1024];
    mls_state_password(state, raw, plain, sizeof(raw));
    if (strlen(plain) >= 4) /* (a shorter one would mark every such run of characters) */
        mls_state_scrub(out, size, plain);
}
