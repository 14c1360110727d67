/*
 * pool.h -- a fixed set of compute threads behind a bounded FIFO.
 *
 * Admission is two steps so that the HTTP thread can suspend a connection between them:
 * mls_pool_reserve() claims a queue slot (or refuses at once: the caller answers 503), and
 * mls_pool_push() publishes the job. A worker pops a job and calls `run`; a job counts as
 * in flight from its reservation until `run` returns.
 */
#ifndef MLS_POOL_H
#define MLS_POOL_H

#include <stdatomic.h>
#include <stdint.h>

#include <uv.h>

/* Embed as the first member of a job. */
struct mls_pool_item {
    struct mls_pool_item *next;
    uint64_t t_enqueued; /* uv_hrtime() of mls_pool_push() */
};

/*
 * Runs a job on a worker thread. `wait_ns` is how long it waited in the queue;
 * `cancelled` is set when the pool is being drained past its deadline: answer, do not
 * compute.
 */
typedef void (*mls_pool_run_cb)(struct mls_pool_item *item, uint64_t wait_ns, int cancelled,
                                void *cls);

/* The parts of one parallel_for, shared out among the owner and idle workers. */
struct mls_pool_group {
    void (*fn)(void *arg, int64_t i);
    void *arg;
    int64_t next, n, done;
    struct mls_pool_group *link;
};

struct mls_pool {
    uv_mutex_t mu;
    uv_cond_t cv;
    struct mls_pool_item *head, *tail;
    unsigned queued;       /* reserved or waiting */
    unsigned running;      /* popped, `run` not yet returned */
    _Atomic unsigned jobs; /* queued + running, also read without the mutex */
    unsigned capacity;
    int closed;                    /* no more reservations (draining) */
    int cancelled;                 /* answer what is queued without computing */
    int stopping;                  /* workers exit once the queue is empty */
    struct mls_pool_group *groups; /* parallel_for calls with parts left to start */
    uint64_t parts_helped;         /* parts run by a worker other than their request's */
    mls_pool_run_cb run;
    void *cls;
    uv_thread_t *threads;
    unsigned num_threads;
};

/* Starts `workers` threads. Returns 0 or a negative libuv error. */
int mls_pool_init(struct mls_pool *p, unsigned workers, unsigned capacity, mls_pool_run_cb run,
                  void *cls);

/* Outcomes of mls_pool_reserve(). */
enum { MLS_POOL_RESERVED = 0, MLS_POOL_FULL = 1, MLS_POOL_CLOSED = 2 };

int mls_pool_reserve(struct mls_pool *p);
/* Publishes a job for which a slot was reserved. */
void mls_pool_push(struct mls_pool *p, struct mls_pool_item *item);

/* Refuses further reservations (draining). */
void mls_pool_close(struct mls_pool *p);
/* Makes workers answer the jobs still queued without computing them. */
void mls_pool_cancel(struct mls_pool *p);
/* Jobs reserved, queued or running. */
unsigned mls_pool_in_flight(struct mls_pool *p);
void mls_pool_counts(struct mls_pool *p, unsigned *queued, unsigned *running);
/* Whether every worker has a job (running or queued for it): one more would wait. */
int mls_pool_busy(struct mls_pool *p);
/* Parts of split requests that idle workers ran so far. */
uint64_t mls_pool_parts_helped(struct mls_pool *p);

/*
 * The parallel_for of struct ml_request (ctx is the pool): called by a worker running a job,
 * it runs fn(arg, i) for i in [0, n) itself and on the workers that are idle, which take
 * parts before new jobs, and returns when all are done. A busy pool simply leaves every
 * part to the caller.
 */
void mls_pool_parallel_for(void *ctx, int64_t n, void (*fn)(void *arg, int64_t i), void *arg);

/* Lets the workers finish what is queued, joins them and releases the pool. */
void mls_pool_destroy(struct mls_pool *p);

#endif /* MLS_POOL_H */
