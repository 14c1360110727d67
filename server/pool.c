/*
 * pool.c -- compute threads and their bounded queue (uv_thread, uv_mutex, uv_cond).
 *
 * Our own pool rather than uv_queue_work(): the latter may only be called on the loop
 * thread and its queue is unbounded, so the HTTP thread would need an extra hop and its
 * own counting to refuse work.
 */
#include <stdlib.h>

#include "pool.h"

/* A parallel_for with parts not yet started, or NULL (under mu). */
static struct mls_pool_group *open_group(struct mls_pool *p)
{
    for (struct mls_pool_group *g = p->groups; g; g = g->link)
        if (g->next < g->n)
            return g;
    return NULL;
}

/* Runs one part of g (called and returning with mu held). */
static void run_part(struct mls_pool *p, struct mls_pool_group *g)
{
    int64_t i = g->next++;
    uv_mutex_unlock(&p->mu);
    g->fn(g->arg, i);
    uv_mutex_lock(&p->mu);
    /* The owner waits for the last part; after this, g may be gone. */
    if (++g->done == g->n)
        uv_cond_broadcast(&p->cv);
}

void mls_pool_parallel_for(void *ctx, int64_t n, void (*fn)(void *arg, int64_t i), void *arg)
{
    struct mls_pool *p = ctx;
    struct mls_pool_group g = {fn, arg, 0, n, 0, NULL};
    uv_mutex_lock(&p->mu);
    g.link = p->groups;
    p->groups = &g;
    uv_cond_broadcast(&p->cv);
    while (g.next < g.n)
        run_part(p, &g);
    while (g.done < g.n)
        uv_cond_wait(&p->cv, &p->mu);
    for (struct mls_pool_group **at = &p->groups; *at; at = &(*at)->link)
        if (*at == &g) {
            *at = g.link;
            break;
        }
    uv_mutex_unlock(&p->mu);
}

static void worker_main(void *arg)
{
    struct mls_pool *p = arg;
    uv_mutex_lock(&p->mu);
    for (;;) {
        struct mls_pool_group *g;
        while (!p->head && !(g = open_group(p)) && !p->stopping)
            uv_cond_wait(&p->cv, &p->mu);
        /* Parts of a request already running come before new requests. */
        if ((g = open_group(p))) {
            p->parts_helped++;
            run_part(p, g);
            continue;
        }
        struct mls_pool_item *it = p->head;
        if (!it)
            break; /* stopping and nothing left */
        p->head = it->next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
        p->running++; /* (jobs unchanged) */
        int cancelled = p->cancelled;
        uv_mutex_unlock(&p->mu);

        uint64_t now = uv_hrtime();
        p->run(it, now > it->t_enqueued ? now - it->t_enqueued : 0, cancelled, p->cls);

        /* After run(): a job counts until its connection was resumed, so "nothing in
         * flight" proves no connection is still suspended. */
        uv_mutex_lock(&p->mu);
        p->running--;
        atomic_store_explicit(&p->jobs, p->queued + p->running, memory_order_relaxed);
    }
    uv_mutex_unlock(&p->mu);
}

int mls_pool_init(struct mls_pool *p, unsigned workers, unsigned capacity, mls_pool_run_cb run,
                  void *cls)
{
    int rc;
    *p = (struct mls_pool){.capacity = capacity, .run = run, .cls = cls};
    p->threads = calloc(workers, sizeof(*p->threads));
    if (!p->threads)
        return UV_ENOMEM;
    if ((rc = uv_mutex_init(&p->mu)))
        goto fail_threads;
    if ((rc = uv_cond_init(&p->cv)))
        goto fail_mutex;
    for (; p->num_threads < workers; p->num_threads++) {
        if ((rc = uv_thread_create(&p->threads[p->num_threads], worker_main, p))) {
            mls_pool_destroy(p);
            return rc;
        }
    }
    return 0;

fail_mutex:
    uv_mutex_destroy(&p->mu);
fail_threads:
    free(p->threads);
    p->threads = NULL;
    return rc;
}

int mls_pool_reserve(struct mls_pool *p)
{
    int rc = MLS_POOL_RESERVED;
    uv_mutex_lock(&p->mu);
    if (p->closed)
        rc = MLS_POOL_CLOSED;
    else if (p->queued >= p->capacity)
        rc = MLS_POOL_FULL;
    else {
        p->queued++;
        atomic_store_explicit(&p->jobs, p->queued + p->running, memory_order_relaxed);
    }
    uv_mutex_unlock(&p->mu);
    return rc;
}

void mls_pool_push(struct mls_pool *p, struct mls_pool_item *item)
{
    item->next = NULL;
    item->t_enqueued = uv_hrtime();
    uv_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = item;
    else
        p->head = item;
    p->tail = item;
    uv_cond_signal(&p->cv);
    uv_mutex_unlock(&p->mu);
}

void mls_pool_close(struct mls_pool *p)
{
    uv_mutex_lock(&p->mu);
    p->closed = 1;
    uv_mutex_unlock(&p->mu);
}

void mls_pool_cancel(struct mls_pool *p)
{
    uv_mutex_lock(&p->mu);
    p->closed = 1;
    p->cancelled = 1;
    uv_mutex_unlock(&p->mu);
}

void mls_pool_counts(struct mls_pool *p, unsigned *queued, unsigned *running)
{
    uv_mutex_lock(&p->mu);
    *queued = p->queued;
    *running = p->running;
    uv_mutex_unlock(&p->mu);
}

int mls_pool_busy(struct mls_pool *p)
{
    /* Without the mutex, which the workers take for every job and every part of a split
     * request: asked for every small request, it would make the HTTP thread wait for them.
     * A count a moment old only changes where one request is computed. */
    return atomic_load_explicit(&p->jobs, memory_order_relaxed) >= p->num_threads;
}

uint64_t mls_pool_parts_helped(struct mls_pool *p)
{
    uv_mutex_lock(&p->mu);
    uint64_t n = p->parts_helped;
    uv_mutex_unlock(&p->mu);
    return n;
}

unsigned mls_pool_in_flight(struct mls_pool *p)
{
    unsigned q, r;
    mls_pool_counts(p, &q, &r);
    return q + r;
}

void mls_pool_destroy(struct mls_pool *p)
{
    uv_mutex_lock(&p->mu);
    p->stopping = 1;
    uv_cond_broadcast(&p->cv);
    uv_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->num_threads; i++)
        uv_thread_join(&p->threads[i]);
    uv_cond_destroy(&p->cv);
    uv_mutex_destroy(&p->mu);
    free(p->threads);
    p->threads = NULL;
    p->num_threads = 0;
}
