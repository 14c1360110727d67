/*
 * readlimit.c -- a loop that only reads (readlimit.h).
 *
 * Built with -O3 (Makefile): an integer XOR over 64-bit words is associative, so the
 * vectoriser turns it into wide loads with no other work, whatever the instruction set the
 * CLI is built for. A bandwidth-bound loop does not need wider registers than SSE2's.
 */
#include <string.h>

#include "readlimit.h"

/* Elements per step: every span advances by its share of this many elements, so that the
 * streams are read together as a kernel reads them (the prefetchers see them all). */
#define STEP 4096

static uint64_t xor_words(const unsigned char *p, size_t bytes)
{
    uint64_t acc[8] = {0};
    size_t i = 0;
    for (; i + 64 <= bytes; i += 64)
        for (int j = 0; j < 8; j++) {
            uint64_t w;
            memcpy(&w, p + i + 8 * (size_t)j, 8);
            acc[j] ^= w;
        }
    for (; i < bytes; i++)
        acc[0] ^= p[i];
    return acc[0] ^ acc[1] ^ acc[2] ^ acc[3] ^ acc[4] ^ acc[5] ^ acc[6] ^ acc[7];
}

uint64_t bench_read_all(const struct bench_span *spans, int k, int64_t n)
{
    uint64_t digest = 0;
    for (int64_t e = 0; e < n; e += STEP) {
        int64_t end = n - e < STEP ? n : e + STEP;
        for (int s = 0; s < k; s++) {
            /* Byte offsets of elements e and end in this span, in proportion. */
            size_t from = (size_t)((double)spans[s].bytes * (double)e / (double)n);
            size_t to = (size_t)((double)spans[s].bytes * (double)end / (double)n);
            if (end == n)
                to = spans[s].bytes;
            digest ^= xor_words((const unsigned char *)spans[s].data + from, to - from);
        }
    }
    return digest;
}
