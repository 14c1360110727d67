/*
 * fuzz_npy.c -- the .npy reader of the maskloss command (cli/npy.c), from memory
 * (npy_parse, under npy_open).
 *
 * Invariants: an image that parses gives a rank within ML_MAX_RANK, non-negative
 * dimensions, a known dtype, and a shape whose bytes fit the input: the data lies inside
 * the input (or is a copy of that size); every byte of it is read here, so a sanitizer
 * sees an over-read. A failure has a message.
 */
#include <string.h>

#include "fuzz.h"
#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct npy_array a;
    char why[512];
    why[0] = '\0';
    memset(&a, 0, sizeof(a));
    if (npy_parse(&a, data, size, "input", why, sizeof(why))) {
        FUZZ_CHECK(why[0] != '\0', "a failure without a message");
        FUZZ_CHECK(a.owned == NULL, "a failure holds memory");
        return 0;
    }
    FUZZ_CHECK(a.t.rank >= 0 && a.t.rank <= ML_MAX_RANK, "rank %d", a.t.rank);
    size_t esize = ml_dtype_size(a.t.dtype);
    FUZZ_CHECK(esize > 0, "dtype %d", (int)a.t.dtype);
    /* The byte size, computed here: the check must not trust the reader's own arithmetic
     * (a product is stopped once it passes the input's size, so it cannot overflow). */
    int empty = 0;
    for (int d = 0; d < a.t.rank; d++) {
        FUZZ_CHECK(a.t.shape[d] >= 0, "dimension %d is %lld", d, (long long)a.t.shape[d]);
        empty |= a.t.shape[d] == 0;
    }
    uint64_t bytes = empty ? 0 : esize;
    for (int d = 0; d < a.t.rank && !empty; d++) {
        FUZZ_CHECK((uint64_t)a.t.shape[d] <= size && bytes * (uint64_t)a.t.shape[d] <= size,
                   "the shape needs more bytes than the %zu of the input", size);
        bytes *= (uint64_t)a.t.shape[d];
    }
    FUZZ_CHECK(bytes <= size, "the shape needs more bytes than the %zu of the input", size);
    const unsigned char *p = a.t.data;
    const unsigned char *in = data;
    FUZZ_CHECK(p != NULL, "no data");
    FUZZ_CHECK(a.owned ? p == a.owned : (p >= in && (size_t)(p - in) + bytes <= size),
               "the data is not inside the input");
    FUZZ_CHECK((uintptr_t)p % esize == 0, "the data is not aligned for its type");
    unsigned sum = 0;
    for (size_t i = 0; i < (size_t)bytes; i++)
        sum += p[i];
    /* The sum keeps the loop; its value means nothing. */
    FUZZ_CHECK(sum != 0xFFFFFFFFu || bytes > 0, "unreachable");
    npy_close(&a);
    return 0;
}
