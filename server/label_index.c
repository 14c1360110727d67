/*
 * label_index.c -- the labels' index (label_index.h): linear probing, deletion by backward
 * shift (no tombstones: the table never degrades), at most 70 % full.
 */
#include <stdlib.h>
#include <string.h>

#include "label_index.h"

static size_t hash(int64_t pred, int32_t slot)
{
    uint64_t h =
        (uint64_t)pred * 0x9E3779B97F4A7C15u ^ (uint64_t)(uint32_t)slot * 0xC2B2AE3D27D4EB4Fu;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9u;
    h ^= h >> 32;
    return (size_t)h;
}

void mls_lx_init(struct mls_lx *x)
{
    memset(x, 0, sizeof(*x));
}

void mls_lx_free(struct mls_lx *x)
{
    free(x->table);
    free(x->log);
    memset(x, 0, sizeof(*x));
}

/* The bucket of (pred, slot), or the empty one where it would go. */
static size_t find(const struct mls_lx *x, int64_t pred, int32_t slot)
{
    size_t mask = x->cap - 1, i = hash(pred, slot) & mask;
    while (x->table[i].pred && !(x->table[i].pred == pred && x->table[i].slot == slot))
        i = (i + 1) & mask;
    return i;
}

const struct mls_lx_entry *mls_lx_get(const struct mls_lx *x, int64_t pred, int32_t slot)
{
    if (!x->count)
        return NULL;
    size_t i = find(x, pred, slot);
    return x->table[i].pred ? &x->table[i] : NULL;
}

void mls_lx_prefetch(const struct mls_lx *x, int64_t pred, int32_t slot)
{
    if (x->cap) {
        const struct mls_lx_entry *e = &x->table[hash(pred, slot) & (x->cap - 1)];
        /* (an entry may straddle two lines) */
        __builtin_prefetch(e);
        __builtin_prefetch((const char *)e + sizeof(*e) - 1);
    }
}

static int grow(struct mls_lx *x)
{
    size_t cap = x->cap ? x->cap * 2 : 1024;
    struct mls_lx_entry *t = calloc(cap, sizeof(*t));
    if (!t)
        return -1;
    struct mls_lx old = *x;
    x->table = t;
    x->cap = cap;
    for (size_t i = 0; i < old.cap; i++)
        if (old.table[i].pred)
            x->table[find(x, old.table[i].pred, old.table[i].slot)] = old.table[i];
    free(old.table);
    return 0;
}

static int log_change(struct mls_lx *x, const struct mls_lx_entry *was)
{
    if (!x->logging)
        return 0;
    if (x->log_len == x->log_cap) {
        size_t cap = x->log_cap ? x->log_cap * 2 : 256;
        struct mls_lx_undo *n = realloc(x->log, cap * sizeof(*n));
        if (!n)
            return -1;
        x->log = n;
        x->log_cap = cap;
    }
    x->log[x->log_len++].was = *was;
    return 0;
}

/* Sets or removes without logging (the undo's own changes). */
static void raw_del(struct mls_lx *x, int64_t pred, int32_t slot)
{
    size_t mask = x->cap - 1, i = find(x, pred, slot);
    if (!x->table[i].pred)
        return;
    /* Backward shift: later entries of the run move into the hole when their home allows. */
    size_t j = i;
    for (;;) {
        x->table[i].pred = 0;
        for (;;) {
            j = (j + 1) & mask;
            if (!x->table[j].pred) {
                x->count--;
                return;
            }
            size_t home = hash(x->table[j].pred, x->table[j].slot) & mask;
            /* j's entry may fill i when its home is not in (i, j] (cyclically). */
            if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
                break;
        }
        x->table[i] = x->table[j];
        i = j;
    }
}

static int raw_put(struct mls_lx *x, const struct mls_lx_entry *e)
{
    if ((x->count + 1) * 10 > x->cap * 7 && grow(x))
        return -1;
    size_t i = find(x, e->pred, e->slot);
    if (!x->table[i].pred)
        x->count++;
    x->table[i] = *e;
    return 0;
}

int mls_lx_put(struct mls_lx *x, const struct mls_lx_entry *e)
{
    /* (one probe of the table: its entries are far apart in memory, each a cache miss) */
    if ((x->count + 1) * 10 > x->cap * 7 && grow(x))
        return -1;
    size_t i = find(x, e->pred, e->slot);
    struct mls_lx_entry *at = &x->table[i];
    struct mls_lx_entry was =
        at->pred ? *at : (struct mls_lx_entry){.pred = e->pred, .slot = e->slot};
    if (log_change(x, &was))
        return -1;
    x->count += !at->pred;
    *at = *e;
    return 0;
}

int mls_lx_del(struct mls_lx *x, int64_t pred, int32_t slot)
{
    const struct mls_lx_entry *had = mls_lx_get(x, pred, slot);
    if (!had)
        return 0;
    if (log_change(x, had))
        return -1;
    raw_del(x, pred, slot);
    return 0;
}

void mls_lx_begin(struct mls_lx *x)
{
    x->log_len = 0;
    x->num_marks = 0;
    x->logging = 1;
}

int mls_lx_mark(struct mls_lx *x)
{
    if (x->num_marks == (int)(sizeof(x->marks) / sizeof(x->marks[0])))
        return -1;
    x->marks[x->num_marks++] = x->log_len;
    return 0;
}

/* Undoes the log back to length `to`, newest first. */
static void undo_to(struct mls_lx *x, size_t to)
{
    while (x->log_len > to) {
        const struct mls_lx_entry *was = &x->log[--x->log_len].was;
        if (was->lid)
            raw_put(x, was); /* (it was there: its room is there) */
        else
            raw_del(x, was->pred, was->slot);
    }
}

void mls_lx_undo(struct mls_lx *x)
{
    if (x->num_marks)
        undo_to(x, x->marks[--x->num_marks]);
}

void mls_lx_release(struct mls_lx *x)
{
    if (x->num_marks)
        x->num_marks--;
}

void mls_lx_commit(struct mls_lx *x)
{
    x->log_len = 0;
    x->num_marks = 0;
    x->logging = 0;
}

void mls_lx_rollback(struct mls_lx *x)
{
    undo_to(x, 0);
    x->num_marks = 0;
    x->logging = 0;
}
