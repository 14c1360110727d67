/*
 * auth.c -- the token file (mlp_auth.h): SHA-256, its lines, the scopes.
 */
#include <stdio.h>
#include <string.h>

#include "mlp_auth.h"

/* ---- SHA-256, FIPS 180-4 -------------------------------------------------------------- */

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror(uint32_t x, int n)
{
    return x >> n | x << (32 - n);
}

static void block(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ w[i - 15] >> 3;
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ w[i - 2] >> 10;
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 =
            k + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += k;
}

void mlp_sha256(const void *data, size_t len, uint8_t out[32])
{
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const uint8_t *p = data;
    size_t n = len;
    for (; n >= 64; p += 64, n -= 64)
        block(h, p);
    /* The tail, 0x80, zeros, and the length in bits (big-endian) in one or two blocks. */
    uint8_t last[128] = {0};
    if (n)
        memcpy(last, p, n);
    last[n] = 0x80;
    size_t total = n + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        last[total - 1 - i] = (uint8_t)(bits >> (8 * i));
    for (size_t off = 0; off < total; off += 64)
        block(h, last + off);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(h[i] >> 8);
        out[4 * i + 3] = (uint8_t)h[i];
    }
}

int mlp_hash_equal(const uint8_t a[32], const uint8_t b[32])
{
    /* Every word is read and folded, whatever differs first: the time says nothing of where.
     * (Words, not bytes: a server compares a token with every line of its file.) */
    volatile uint64_t diff = 0;
    for (int i = 0; i < 32; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        diff = diff | (x ^ y);
    }
    return diff == 0;
}

/* ---- Scopes and lines ------------------------------------------------------------------- */

static const struct {
    const char *name;
    unsigned bit;
} scopes[] = {
    {"evaluate", MLP_SCOPE_EVALUATE},
    {"monitor:read", MLP_SCOPE_MONITOR_READ},
    {"monitor:write", MLP_SCOPE_MONITOR_WRITE},
    {"admin", MLP_SCOPE_ADMIN},
    {"metrics", MLP_SCOPE_METRICS},
};
#define NSCOPES (sizeof(scopes) / sizeof(scopes[0]))

const char *mlp_scope_name(unsigned scope)
{
    for (size_t i = 0; i < NSCOPES; i++)
        if (scopes[i].bit == scope)
            return scopes[i].name;
    return NULL;
}

static void scope_list(char *out, size_t size)
{
    size_t at = 0;
    out[0] = 0;
    for (size_t i = 0; i < NSCOPES && at < size; i++)
        at += (size_t)snprintf(out + at, size - at, "%s%s", i ? ", " : "", scopes[i].name);
}

int mlp_scopes_parse(const char *text, size_t len, unsigned *out, char *err, size_t errlen)
{
    unsigned bits = 0;
    size_t i = 0;
    for (;;) {
        size_t j = i;
        while (j < len && text[j] != ',')
            j++;
        size_t k = 0;
        while (k < NSCOPES &&
               !(strlen(scopes[k].name) == j - i && !memcmp(scopes[k].name, text + i, j - i)))
            k++;
        if (k == NSCOPES) {
            char known[128];
            scope_list(known, sizeof(known));
            snprintf(err, errlen, "%s scope '%.*s': the scopes are %s, separated by commas",
                     j == i ? "empty" : "unknown", (int)(j - i > 40 ? 40 : j - i), text + i, known);
            return -1;
        }
        bits |= scopes[k].bit;
        if (j == len)
            break;
        i = j + 1;
    }
    *out = bits & MLP_SCOPE_ADMIN ? MLP_SCOPE_ALL : bits;
    return 0;
}

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || c == '@' || c == ':';
}

static int name_ok(const char *s, size_t n)
{
    if (n < 1 || n > MLP_TOKEN_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!name_char(s[i]))
            return 0;
    return 1;
}

int mlp_token_name_ok(const char *name)
{
    return name_ok(name, strlen(name));
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

int mlp_token_line_parse(const char *line, size_t len, struct mlp_token *t, char *err,
                         size_t errlen)
{
    static const char expected[] = "expected '<sha-256 of the token, 64 hex digits> <name> "
                                   "<scope>[,<scope>...]'";
    const char *field[4];
    size_t flen[4], n = 0, i = 0;
    while (i < len && blank(line[i]))
        i++;
    if (i == len || line[i] == '#')
        return 0;
    while (i < len) {
        size_t j = i;
        while (j < len && !blank(line[j]))
            j++;
        if (n == 4)
            break;
        field[n] = line + i;
        flen[n++] = j - i;
        i = j;
        while (i < len && blank(line[i]))
            i++;
    }
    if (n != 3) {
        snprintf(err, errlen, "%s fields where 3 are %s", n < 3 ? "too few" : "too many", expected);
        return -1;
    }
    if (flen[0] != 64) {
        snprintf(err, errlen, "the hash has %zu characters, not 64: %s", flen[0], expected);
        return -1;
    }
    memset(t, 0, sizeof(*t));
    for (int b = 0; b < 32; b++) {
        int hi = hex_value(field[0][2 * b]), lo = hex_value(field[0][2 * b + 1]);
        if (hi < 0 || lo < 0) {
            snprintf(err, errlen, "the hash is not hexadecimal: %s", expected);
            return -1;
        }
        t->hash[b] = (uint8_t)(hi << 4 | lo);
    }
    if (!name_ok(field[1], flen[1])) {
        snprintf(err, errlen,
                 "name '%.*s': a name is 1 to %d of A-Z a-z 0-9 . _ - @ : (it goes into logs "
                 "and metrics)",
                 (int)(flen[1] > 70 ? 70 : flen[1]), field[1], MLP_TOKEN_NAME_MAX);
        return -1;
    }
    memcpy(t->name, field[1], flen[1]);
    t->name[flen[1]] = 0;
    return mlp_scopes_parse(field[2], flen[2], &t->scopes, err, errlen) ? -1 : 1;
}

int mlp_token_line_format(const char *token, const char *name, unsigned bits, char *out,
                          size_t size)
{
    if (!mlp_token_name_ok(name) || !bits || (bits & ~MLP_SCOPE_ALL))
        return -1;
    uint8_t h[32];
    mlp_sha256(token, strlen(token), h);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
    size_t at = (size_t)snprintf(out, size, "%s %s ", hex, name);
    if (at >= size)
        return -1;
    if (bits & MLP_SCOPE_ADMIN)
        bits = MLP_SCOPE_ADMIN;
    const char *sep = "";
    for (size_t i = 0; i < NSCOPES; i++) {
        if (!(bits & scopes[i].bit))
            continue;
        at += (size_t)snprintf(out + at, at < size ? size - at : 0, "%s%s", sep, scopes[i].name);
        sep = ",";
    }
    at += (size_t)snprintf(out + at, at < size ? size - at : 0, "\n");
    return at < size ? (int)at : -1;
}
