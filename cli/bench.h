/* bench.h -- `maskloss bench`. */
#ifndef BENCH_H
#define BENCH_H

/* Runs the benchmark; argv holds the arguments after "bench". Returns the exit status. */
int maskloss_bench(int argc, char **argv);

#endif /* BENCH_H */
