/*
 * buf.c -- the growable text buffer and its JSON tokens (see buf.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

void mlp_buf_append(struct mlp_buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void mlp_buf_puts(struct mlp_buf *b, const char *s)
{
    mlp_buf_append(b, s, strlen(s));
}

void mlp_buf_number(struct mlp_buf *b, double v)
{
    char tmp[40];
    if (isnan(v)) {
        mlp_buf_puts(b, "\"NaN\"");
        return;
    }
    if (isinf(v)) {
        mlp_buf_puts(b, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    if (v == 0) {
        mlp_buf_puts(b, signbit(v) ? "-0.0" : "0.0");
        return;
    }
    /* A whole number below 10^15 is what %.15g writes, digit for digit, without the search
     * (counts and masked denominators are most of a monitor's numbers). */
    if (fabs(v) < 1e15 && v == (double)(long long)v) {
        snprintf(tmp, sizeof(tmp), "%lld.0", (long long)v);
        mlp_buf_puts(b, tmp);
        return;
    }
    /* The shortest of 15, 16, 17 significant digits that reads back exactly. */
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
        if (prec == 17 || strtod(tmp, NULL) == v)
            break;
    }
    /* Keep a JSON number that parsers read as floating point: 2 -> 2.0. */
    if (!strpbrk(tmp, ".eEn"))
        strcat(tmp, ".0");
    mlp_buf_puts(b, tmp);
}

/* The length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong form, no
 * surrogate, nothing past U+10FFFF), or 0. A NUL ends any sequence. */
static int utf8_sequence(const unsigned char *p)
{
    int n = p[0] >= 0xF0 ? 4 : p[0] >= 0xE0 ? 3 : p[0] >= 0xC0 ? 2 : 0;
    if (!n || p[0] > 0xF4 || p[0] == 0xC0 || p[0] == 0xC1)
        return 0;
    for (int i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] >= 0xA0) ||
        (p[0] == 0xF0 && p[1] < 0x90) || (p[0] == 0xF4 && p[1] >= 0x90))
        return 0; /* overlong, surrogate, beyond U+10FFFF */
    return n;
}

void mlp_buf_string(struct mlp_buf *b, const char *s)
{
    mlp_buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"':
            mlp_buf_append(b, "\\\"", 2);
            break;
        case '\\':
            mlp_buf_append(b, "\\\\", 2);
            break;
        case '\n':
            mlp_buf_append(b, "\\n", 2);
            break;
        case '\t':
            mlp_buf_append(b, "\\t", 2);
            break;
        case '\r':
            mlp_buf_append(b, "\\r", 2);
            break;
        default:
            if (*p < 0x20) {
                snprintf(esc, sizeof(esc), "\\u%04x", *p);
                mlp_buf_append(b, esc, 6);
            } else if (*p < 0x80) {
                mlp_buf_append(b, (const char *)p, 1);
            } else {
                /* Text that is not UTF-8 (bytes of a malformed body quoted by jansson, a
                 * message cut inside a character) would make the document invalid JSON. */
                int n = utf8_sequence(p);
                if (n) {
                    mlp_buf_append(b, (const char *)p, (size_t)n);
                    p += n - 1;
                } else {
                    mlp_buf_append(b, "\\ufffd", 6);
                }
            }
        }
    }
    mlp_buf_append(b, "\"", 1);
}
