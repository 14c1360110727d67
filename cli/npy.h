/*
 * npy.h -- numpy .npy files (format versions 1.0, 2.0 and 3.0) for the maskloss command:
 * inputs memory-mapped, outputs written as little-endian float64.
 */
#ifndef NPY_H
#define NPY_H

#include <stddef.h>

#include "maskloss.h"

struct npy_array {
    struct ml_tensor t; /* a view of the mapping (or of `owned` for big-endian files) */
    void *map;
    size_t map_len;
    void *owned;
};

/*
 * Maps path and describes its array in a->t. Returns 0, or -1 with a message naming the
 * file and what is wrong in why (wrong magic, truncated data, unsupported dtype, Fortran
 * order). Big-endian data is converted into memory of its own.
 */
int npy_open(struct npy_array *a, const char *path, char *why, size_t why_size);
void npy_close(struct npy_array *a);

/*
 * The same from memory: describes the .npy image buf[0..len) in a->t, whose data is a view
 * of buf (which must outlive a) or, for big-endian or unaligned data, a converted copy in
 * a->owned. `name` is how messages call the image. Returns 0 (release with npy_close()), or
 * -1 with the message in why and nothing to release.
 */
int npy_parse(struct npy_array *a, const void *buf, size_t len, const char *name, char *why,
              size_t why_size);

/* Writes a float64 array of the given shape. Returns 0 or -1 (errno set). */
int npy_write(const char *path, const double *data, int rank, const int64_t *shape);

#endif /* NPY_H */
