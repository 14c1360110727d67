/*
 * npy.c -- reading and writing numpy .npy files.
 *
 * The format (numpy/lib/format.py): the magic "\x93NUMPY", a major and minor version byte,
 * the header length (2 bytes little-endian in 1.0, 4 bytes in 2.0 and 3.0), then the header:
 * a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (4, 5), } padded
 * with spaces and a newline; the data follows, row-major unless fortran_order.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mlp.h"
#include "npy.h"

static const struct {
    const char *descr; /* without the byte-order character */
    enum ml_dtype dtype;
} types[] = {
    {"f4", ML_FLOAT32}, {"f8", ML_FLOAT64}, {"u1", ML_UINT8},
    {"b1", ML_BOOL},    {"i4", ML_INT32},   {"i8", ML_INT64},
};

/* The value text after 'key': in the header, or NULL. */
static const char *header_value(const char *h, size_t len, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i + klen + 2 < len; i++) {
        if ((h[i] == '\'' || h[i] == '"') && !strncmp(h + i + 1, key, klen) &&
            h[i + 1 + klen] == h[i]) {
            const char *p = h + i + klen + 2;
            while (p < h + len && (*p == ' ' || *p == ':'))
                p++;
            return p < h + len ? p : NULL;
        }
    }
    return NULL;
}

static int bad(char *why, size_t size, const char *path, const char *msg)
{
    snprintf(why, size, "%s: %s", path, msg);
    return -1;
}

static int parse_header(struct npy_array *a, const char *path, const char *h, size_t hlen,
                        int *swap, char *why, size_t why_size)
{
    char msg[200];
    const char *d = header_value(h, hlen, "descr");
    const char *f = header_value(h, hlen, "fortran_order");
    const char *s = header_value(h, hlen, "shape");
    if (!d || !f || !s || (*d != '\'' && *d != '"') || *s != '(')
        return bad(why, why_size, path, "the .npy header lacks descr, fortran_order or shape");
    char descr[16];
    size_t n = 0;
    for (const char *p = d + 1; p < h + hlen && *p != *d && n + 1 < sizeof(descr); p++)
        descr[n++] = *p;
    descr[n] = '\0';
    char order = descr[0];
    const char *code = n ? descr + 1 : descr; /* "" when descr is empty */
    int found = 0;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (!strcmp(code, types[i].descr) && order && strchr("<>|=", order)) {
            a->t.dtype = types[i].dtype;
            found = 1;
        }
    if (!found) {
        snprintf(msg, sizeof(msg),
                 "dtype '%s' is not supported; use float32, float64, uint8, bool, int32 or int64",
                 descr);
        return bad(why, why_size, path, msg);
    }
    *swap = order == '>' && ml_dtype_size(a->t.dtype) > 1;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    *swap = (order == '<') && ml_dtype_size(a->t.dtype) > 1;
#endif
    /* shape: (), (5,), (4, 5) */
    const char *p = s + 1;
    a->t.rank = 0;
    for (;;) {
        while (p < h + hlen && (*p == ' ' || *p == ','))
            p++;
        if (p >= h + hlen)
            return bad(why, why_size, path, "the .npy header's shape is not closed");
        if (*p == ')')
            break;
        if (a->t.rank == ML_MAX_RANK)
            return bad(why, why_size, path, "the array has more than 8 dimensions");
        /* Digits read within the header: it is not NUL-terminated (strtoll would run on
         * into the data, or past the end of the file). */
        int64_t dim = 0;
        const char *digits = p;
        while (p < h + hlen && *p >= '0' && *p <= '9' && dim <= (INT64_MAX - 9) / 10)
            dim = dim * 10 + (*p++ - '0');
        if (p == digits || (p < h + hlen && *p >= '0' && *p <= '9'))
            return bad(why, why_size, path, "the .npy header's shape is not a tuple of sizes");
        a->t.shape[a->t.rank++] = dim;
        while (p < h + hlen && *p == 'L') /* Python 2 longs */
            p++;
    }
    size_t flen = (size_t)(h + hlen - f);
    if (flen >= 4 && !strncmp(f, "True", 4)) {
        int nontrivial = 0;
        for (int i = 0; i < a->t.rank; i++)
            nontrivial += a->t.shape[i] > 1;
        if (nontrivial > 1)
            return bad(why, why_size, path,
                       "the array is in Fortran (column-major) order; save it with "
                       "np.save(path, np.ascontiguousarray(a))");
    } else if (flen < 5 || strncmp(f, "False", 5)) {
        return bad(why, why_size, path, "the .npy header's fortran_order is not True or False");
    }
    return 0;
}

int npy_parse(struct npy_array *a, const void *buf, size_t len, const char *name, char *why,
              size_t why_size)
{
    char msg[200];
    const unsigned char *m = buf;
    memset(&a->t, 0, sizeof(a->t));
    a->owned = NULL;
    if (len < 10 || memcmp(m, "\x93NUMPY", 6))
        return bad(why, why_size, name,
                   len < 10 ? "not a .npy file (too short)"
                            : "not a .npy file (no \\x93NUMPY magic)");
    size_t hstart, hlen;
    if (m[6] == 1) {
        hstart = 10;
        hlen = m[8] | (size_t)m[9] << 8;
    } else if ((m[6] == 2 || m[6] == 3) && len >= 12) {
        hstart = 12;
        hlen = m[8] | (size_t)m[9] << 8 | (size_t)m[10] << 16 | (size_t)m[11] << 24;
    } else {
        snprintf(msg, sizeof(msg), "unsupported .npy format version %u.%u", m[6], m[7]);
        return bad(why, why_size, name, msg);
    }
    if (hlen > len - hstart)
        return bad(why, why_size, name, "truncated .npy header");
    int swap = 0;
    if (parse_header(a, name, (const char *)m + hstart, hlen, &swap, why, why_size))
        return -1;
    size_t offset = hstart + hlen;
    size_t esize = ml_dtype_size(a->t.dtype);
    int64_t n = 1;
    for (int i = 0; i < a->t.rank; i++) {
        if (a->t.shape[i] && n > (INT64_MAX / (int64_t)esize) / a->t.shape[i])
            return bad(why, why_size, name, "the shape's size overflows");
        n *= a->t.shape[i];
    }
    size_t need = (size_t)n * esize;
    if (need > len - offset) {
        snprintf(msg, sizeof(msg),
                 "truncated: the shape needs %zu bytes of data but the file holds %zu", need,
                 len - offset);
        return bad(why, why_size, name, msg);
    }
    const unsigned char *data = m + offset;
    if (swap || (uintptr_t)data % esize) {
        /* Big-endian (or oddly aligned) data: a converted copy. */
        unsigned char *c = malloc(need ? need : 1);
        if (!c)
            return bad(why, why_size, name, "out of memory");
        memcpy(c, data, need);
        if (swap)
            mlp_swap_bytes(c, need, esize);
        a->owned = c;
        data = c;
    }
    a->t.data = data;
    return 0;
}

int npy_open(struct npy_array *a, const char *path, char *why, size_t why_size)
{
    memset(a, 0, sizeof(*a));
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        snprintf(why, why_size, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) || st.st_size < 10) {
        close(fd);
        return bad(why, why_size, path, "not a .npy file (too short)");
    }
    a->map_len = (size_t)st.st_size;
    a->map = mmap(NULL, a->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (a->map == MAP_FAILED) {
        a->map = NULL;
        snprintf(why, why_size, "%s: cannot map: %s", path, strerror(errno));
        return -1;
    }
    if (npy_parse(a, a->map, a->map_len, path, why, why_size)) {
        npy_close(a);
        return -1;
    }
    return 0;
}

void npy_close(struct npy_array *a)
{
    if (a->map)
        munmap(a->map, a->map_len);
    free(a->owned);
    memset(a, 0, sizeof(*a));
}

int npy_write(const char *path, const double *data, int rank, const int64_t *shape)
{
    char header[512];
    int len =
        snprintf(header, sizeof(header), "{'descr': '<f8', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < rank; i++)
        len += snprintf(header + len, sizeof(header) - (size_t)len, "%lld%s", (long long)shape[i],
                        rank == 1      ? ","
                        : i + 1 < rank ? ", "
                                       : "");
    len += snprintf(header + len, sizeof(header) - (size_t)len, "), }");
    /* Pad so that the data starts 64-byte aligned, as numpy does; end with a newline. */
    while ((10 + len + 1) % 64)
        header[len++] = ' ';
    header[len++] = '\n';
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    unsigned char pre[10] = {0x93,
                             'N',
                             'U',
                             'M',
                             'P',
                             'Y',
                             1,
                             0,
                             (unsigned char)(len & 0xff),
                             (unsigned char)(len >> 8)};
    int64_t n = ml_shape_numel(rank, shape);
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(header, 1, (size_t)len, f) == (size_t)len;
    for (int64_t i = 0; ok && i < n; i++) {
        uint64_t x;
        unsigned char b[8];
        memcpy(&x, &data[i], 8);
        for (int k = 0; k < 8; k++)
            b[k] = (unsigned char)(x >> (8 * k));
        ok = fwrite(b, 1, 8, f) == 8;
    }
    if (fclose(f))
        ok = 0;
    return ok ? 0 : -1;
}
