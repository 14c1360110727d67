/* readlimit.h -- the memory-read limit of a workload, for `maskloss bench`. */
#ifndef READLIMIT_H
#define READLIMIT_H

#include <stddef.h>
#include <stdint.h>

/* One array a workload reads: `bytes` bytes at `data`, read in step with the elements. */
struct bench_span {
    const void *data;
    size_t bytes;
};

/*
 * Reads every byte of the k spans once (the longest, up to three, together in one pass, as an
 * evaluation of n elements reads its labels, logits and mask) and returns a digest of the
 * words so that the reads cannot be dropped. Only reads: the time it takes is the least any
 * loss over the same arrays can take on this machine.
 */
uint64_t bench_read_all(const struct bench_span *spans, int k, int64_t n);

#endif /* READLIMIT_H */
