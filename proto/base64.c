/*
 * base64.c -- RFC 4648 base64 (the standard alphabet) for tensors sent as bytes in JSON.
 */
#include <string.h>

#include "mlp.h"

static int value_of(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

size_t mlp_b64_decoded_size(const char *text, size_t len)
{
    while (len && text[len - 1] == '=')
        len--;
    return len / 4 * 3 + (len % 4 == 3 ? 2 : len % 4 == 2 ? 1 : 0);
}

long long mlp_b64_decode(const char *text, size_t len, unsigned char *out)
{
    size_t end = len;
    /* Padding is optional, but at most two '=' and only at the end. */
    while (end && text[end - 1] == '=' && len - end < 2)
        end--;
    if (end % 4 == 1)
        return -(long long)end - 1; /* a lone sextet cannot encode a byte */
    unsigned acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < end; i++) {
        int v = value_of((unsigned char)text[i]);
        if (v < 0)
            return -(long long)i - 1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if ((len - end) && (len % 4))
        return -(long long)end - 1; /* padding that does not complete a quantum */
    return (long long)o;
}

void mlp_swap_bytes(void *data, size_t bytes, size_t esize)
{
    unsigned char *p = data;
    for (size_t i = 0; esize > 1 && i + esize <= bytes; i += esize)
        for (size_t a = i, b = i + esize - 1; a < b; a++, b--) {
            unsigned char tmp = p[a];
            p[a] = p[b];
            p[b] = tmp;
        }
}

void mlp_b64_encode(struct mlp_buf *b, const unsigned char *data, size_t n)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char quad[4];
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)data[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)data[i + 1] << 8;
        if (i + 2 < n)
            v |= data[i + 2];
        quad[0] = alphabet[(v >> 18) & 63];
        quad[1] = alphabet[(v >> 12) & 63];
        quad[2] = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
        quad[3] = i + 2 < n ? alphabet[v & 63] : '=';
        mlp_buf_append(b, quad, 4);
    }
}
