/*
 * readlimit.c -- a loop that only reads (readlimit.h).
 *
 * Built with -O3 (Makefile): an integer XOR over 64-bit words is associative, so the
 * vectoriser turns it into wide loads with no other work. The arrays as long as the largest
 * (labels, logits, a dense mask) are read in lockstep, word i of each in the same iteration,
 * as a kernel reads them: three streams the prefetchers follow together (reading them a few
 * KiB at a time in turn measured 0.6x of that here). And in the widest vectors the CPU has:
 * on a 2-core AMD EPYC (Zen 3) SSE2's 16-byte loads reached 0.8x of what AVX2's did, and the
 * kernels use AVX2 there, so a baseline-only loop would understate the limit they face.
 */
#include <string.h>

#include "readlimit.h"

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
#define WIDEST __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define WIDEST
#endif

/* The words of `streams` arrays of `words` words each, in lockstep (1 to 3 arrays). */
WIDEST static uint64_t xor_lockstep(const uint64_t *const *p, int streams, size_t words)
{
    uint64_t x = 0, y = 0, z = 0;
    const uint64_t *a = p[0], *b = p[streams > 1], *c = p[streams > 2 ? 2 : 0];
    if (streams == 1)
        for (size_t i = 0; i < words; i++)
            x ^= a[i];
    else if (streams == 2)
        for (size_t i = 0; i < words; i++) {
            x ^= a[i];
            y ^= b[i];
        }
    else
        for (size_t i = 0; i < words; i++) {
            x ^= a[i];
            y ^= b[i];
            z ^= c[i];
        }
    return x ^ y ^ z;
}

/* Any bytes, a word at a time (the short arrays: a weight or a class index per row). */
static uint64_t xor_bytes(const unsigned char *p, size_t bytes)
{
    uint64_t acc = 0;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        acc ^= w;
    }
    for (; i < bytes; i++)
        acc ^= p[i];
    return acc;
}

uint64_t bench_read_all(const struct bench_span *spans, int k, int64_t n)
{
    (void)n; /* every byte is read once, whatever the elements */
    size_t longest = 0;
    for (int s = 0; s < k; s++)
        if (spans[s].bytes > longest)
            longest = spans[s].bytes;
    const uint64_t *lock[3];
    int streams = 0;
    uint64_t digest = 0;
    for (int s = 0; s < k; s++) {
        /* The long arrays in lockstep when they hold whole aligned words (malloc's). */
        if (spans[s].bytes == longest && streams < 3 && longest % 8 == 0 &&
            (uintptr_t)spans[s].data % 8 == 0)
            lock[streams++] = spans[s].data;
        else
            digest ^= xor_bytes(spans[s].data, spans[s].bytes);
    }
    if (streams)
        digest ^= xor_lockstep(lock, streams, longest / 8);
    return digest;
}
