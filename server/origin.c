/*
 * origin.c -- the list of --cors-origin (origin.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "origin.h"

/* Whether s[0..n) is an origin, after lower-casing: why when not. *port_at: where its
 * ":port" starts (n without one), *port its value, or -1. */
static int origin_ok(const char *s, size_t n, const char **why, size_t *port_at, long *port)
{
    *why = "expected an origin such as https://app.example.com or http://localhost:3000 "
           "(scheme://host[:port]), or *";
    *port_at = n;
    *port = -1;
    if (n == 1 && s[0] == '*')
        return 1;
    if (n > MLS_ORIGIN_MAX) {
        *why = "longer than an origin can be (scheme://, a host name of 253 bytes at most, "
               ":port)";
        return 0;
    }
    size_t i;
    if (n > 7 && !memcmp(s, "http://", 7))
        i = 7;
    else if (n > 8 && !memcmp(s, "https://", 8))
        i = 8;
    else
        return 0;
    size_t host = i;
    if (s[i] == '[') { /* an IPv6 address */
        while (++i < n && s[i] && strchr("0123456789abcdef:.", s[i]))
            ;
        if (i >= n || s[i] != ']' || i == host + 1)
            return 0;
        i++;
    } else {
        while (i < n && s[i] && strchr("abcdefghijklmnopqrstuvwxyz0123456789.-", s[i]))
            i++;
        if (i == host)
            return 0;
    }
    if (i < n && s[i] == ':') {
        *port_at = i;
        size_t digits = ++i;
        *port = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9' && *port <= 65535)
            *port = *port * 10 + (s[i++] - '0');
        if (i == digits || *port < 1 || *port > 65535)
            return 0;
    }
    if (i < n && s[i] == '/')
        *why = "an origin has no path, not even '/': scheme://host[:port], as a browser "
               "sends it in Origin";
    return i == n;
}

int mls_origins_add(char *list, size_t cap, const char *value, const char **why)
{
    size_t len = strlen(list), start = len;
    for (const char *p = value; *p;) {
        size_t skip = strspn(p, " ,\t");
        p += skip;
        size_t n = strcspn(p, " ,\t");
        if (!n)
            break;
        if (len + n + 2 > cap) {
            list[start] = '\0';
            *why = "too many origins";
            return -1;
        }
        /* Browsers send the scheme and host in lower case: compare in lower case. */
        for (size_t i = 0; i < n; i++) {
            char c = p[i];
            list[len + i] = c >= 'A' && c <= 'Z' ? (char)(c | 0x20) : c;
        }
        size_t port_at, kept = n;
        long port;
        if (!origin_ok(list + len, n, why, &port_at, &port)) {
            list[start] = '\0';
            return -1;
        }
        /* Browsers send no default port (https://a.example, never https://a.example:443)
         * and no leading zeros: the same origin written so is kept as they send it. */
        if (port >= 0) {
            int https = list[len + 4] == 's';
            if (port == (https ? 443 : 80))
                kept = port_at;
            else
                kept = port_at + (size_t)snprintf(list + len + port_at, 7, ":%ld", port);
        }
        len += kept;
        list[len++] = '\n';
        list[len] = '\0';
        p += n;
    }
    if (len == start) {
        *why = "expected at least one origin";
        return -1;
    }
    return 0;
}

int mls_origin_allowed(const char *list, const char *origin)
{
    size_t n = strlen(origin);
    int any = 0;
    for (const char *p = list; *p;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !memcmp(p, origin, n))
            return MLS_ORIGIN_LISTED;
        any |= len == 1 && *p == '*';
        p += len + (end ? 1 : 0);
    }
    return any ? MLS_ORIGIN_ANY : 0;
}
