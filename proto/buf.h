/*
 * buf.h -- a growable text buffer, and the JSON tokens every encoder of proto/ writes into it.
 *
 * The encoders (response.c, v2.c) and the server write their documents straight into a
 * struct mlp_buf rather than through json_t: a per_element output of a million values would
 * otherwise cost a million allocations, and jansson cannot spell NaN.
 *
 * Start from an all-zero struct ({0}); `data` is NUL-terminated whenever it is not NULL, and
 * the owner frees it with free(data). An allocation failure sets `failed` and turns every
 * later append into a no-op, so that a writer checks once, at the end, instead of after each
 * call. No function here keeps state outside its buffer: they are reentrant.
 */
#ifndef MLP_BUF_H
#define MLP_BUF_H

#include <stddef.h>

struct mlp_buf {
    char *data;
    size_t len, cap;
    int failed; /* an allocation failed: the content is incomplete */
};

/* Appends n bytes of s (which may hold NUL bytes: binary tensors use it too). */
void mlp_buf_append(struct mlp_buf *b, const char *s, size_t n);

/* Appends the NUL-terminated s. */
void mlp_buf_puts(struct mlp_buf *b, const char *s);

/* A JSON number: the shortest text that reads back as the same double; NaN and the
 * infinities as the strings "NaN", "Infinity", "-Infinity". */
void mlp_buf_number(struct mlp_buf *b, double v);

/* A JSON string with escapes; a byte that does not begin a well-formed UTF-8 sequence is
 * written as U+FFFD, so that the document stays valid JSON whatever s holds. */
void mlp_buf_string(struct mlp_buf *b, const char *s);

#endif /* MLP_BUF_H */
