/*
 * conn.c -- the header deadline and the lingering close (see conn.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/sockios.h> /* SIOCOUTQ */
#endif

#include "conn.h"

struct mls_conn {
    struct mls_conn *prev, *next;
    int fd;
    uint64_t deadline; /* uv_hrtime() by which the next headers must be complete; 0: none */
    int cut;           /* shut down at its deadline */
    int linger;
    /* A body being received: how far it got, and at the last sweep that found the client's
     * side closed (eof_seen). */
    int receiving, eof_seen;
    uint64_t progress, eof_progress;
    uint64_t idle_eof_deadline; /* the deadline when an idle connection was last seen closed */
    struct mls_peer *peer;      /* its client's address */
};

struct mls_linger {
    struct mls_linger *next;
    struct mls_conns *table;
    int fd;
    uint64_t deadline;
    struct mls_peer *peer;
    uv_poll_t poll;
};

/* Kept while the address has a connection, a lingering socket or bytes of the budget. */
struct mls_peer {
    struct mls_peer *next;  /* in its bucket */
    unsigned char addr[16]; /* IPv4 in the first 4 bytes */
    unsigned conns, lingering;
    uint64_t bytes;
};

/*
 * The client's address as the key of its entry: IPv4 in the first 4 bytes; IPv6 by its /64
 * prefix, since one host commonly has a whole /64 to choose its addresses from (an
 * IPv4-mapped address is its IPv4 address).
 */
static void address_of(struct MHD_Connection *c, unsigned char addr[16])
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = info ? info->client_addr : NULL;
    memset(addr, 0, 16);
    if (sa && sa->sa_family == AF_INET)
        memcpy(addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    else if (sa && sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6))
            memcpy(addr, &a6->s6_addr[12], 4);
        else
            memcpy(addr, a6->s6_addr, 8);
        addr[15] = 6; /* never equal to an IPv4 key */
    }
}

/* Whether closing fd now could lose what it carries: the client has sent bytes not read yet
 * (the close would reset the connection), or the answer has not all reached it. */
static int in_transit(int fd)
{
    char byte;
    if (recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0)
        return 1;
#ifdef SIOCOUTQ
    int unsent = 0;
    if (ioctl(fd, SIOCOUTQ, &unsent) == 0 && unsent > 0)
        return 1;
#endif
    return 0;
}

/* ---- Client addresses (the mutex held) ------------------------------------------------- */

static struct mls_peer **bucket_of(struct mls_conns *t, const unsigned char addr[16])
{
    uint32_t h = 2166136261u ^ t->seed; /* FNV-1a, seeded: addresses chosen to collide are
                                            not known in advance */
    for (int i = 0; i < 16; i++)
        h = (h ^ addr[i]) * 16777619u;
    return &t->peers[h & (MLS_PEER_BUCKETS - 1)];
}

/* The address's entry, made if it has none; NULL when out of memory. */
static struct mls_peer *peer_get(struct mls_conns *t, const unsigned char addr[16])
{
    struct mls_peer **b = bucket_of(t, addr);
    for (struct mls_peer *p = *b; p; p = p->next)
        if (!memcmp(p->addr, addr, 16))
            return p;
    struct mls_peer *p = calloc(1, sizeof(*p));
    if (p) {
        memcpy(p->addr, addr, 16);
        p->next = *b;
        *b = p;
    }
    return p;
}

/* Frees the entry once nothing refers to it. */
static void peer_release(struct mls_conns *t, struct mls_peer *p)
{
    if (p->conns || p->lingering || p->bytes)
        return;
    struct mls_peer **b = bucket_of(t, p->addr);
    while (*b != p)
        b = &(*b)->next;
    *b = p->next;
    free(p);
}

/* ---- libmicrohttpd's thread ------------------------------------------------------------- */

void mls_conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                     enum MHD_ConnectionNotificationCode code)
{
    struct mls_conns *t = cls;
    struct mls_conn *conn = *socket_context;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn = info ? calloc(1, sizeof(*conn)) : NULL;
        *socket_context = conn;
        if (!conn)
            return; /* no deadline and no lingering for this one; nothing else changes */
        conn->fd = info->connect_fd;
        conn->deadline = uv_hrtime() + t->header_ns;
        unsigned char addr[16];
        address_of(c, addr);
        uv_mutex_lock(&t->mu);
        if (!(conn->peer = peer_get(t, addr))) {
            uv_mutex_unlock(&t->mu);
            free(conn);
            *socket_context = NULL;
            return;
        }
        conn->peer->conns++;
        conn->next = t->head;
        if (t->head)
            t->head->prev = conn;
        t->head = conn;
        uv_mutex_unlock(&t->mu);
        return;
    }
    if (!conn)
        return;
    *socket_context = NULL;
    struct mls_linger *l = NULL;
    uv_mutex_lock(&t->mu);
    /* Out of the list before libmicrohttpd closes the descriptor: the sweep must never shut
     * down a number that has been reused. */
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        t->head = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    /* One address may not fill the table: the others' early answers would be lost again. */
    if (conn->linger && !conn->cut && !t->closing && t->num_lingering < t->linger_max &&
        conn->peer->lingering < MLS_LINGER_PER_ADDRESS && (l = calloc(1, sizeof(*l)))) {
        l->fd = fcntl(conn->fd, F_DUPFD_CLOEXEC, 0);
        if (l->fd < 0) {
            free(l);
            l = NULL;
        } else {
            l->table = t;
            l->peer = conn->peer;
            l->peer->lingering++;
            l->next = t->handoff;
            t->handoff = l;
            t->num_lingering++;
        }
    }
    conn->peer->conns--;
    peer_release(t, conn->peer);
    uv_mutex_unlock(&t->mu);
    if (l)
        uv_async_send(&t->async);
    free(conn);
}

struct mls_conn *mls_conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : NULL;
}

void mls_conn_headers_done(struct mls_conns *t, struct mls_conn *conn)
{
    if (!conn)
        return;
    uv_mutex_lock(&t->mu);
    conn->deadline = 0;
    conn->receiving = 1;
    conn->eof_seen = 0;
    conn->progress = 0;
    uv_mutex_unlock(&t->mu);
}

void mls_conn_body_progress(struct mls_conns *t, struct mls_conn *conn, uint64_t bytes)
{
    if (!conn)
        return;
    uv_mutex_lock(&t->mu);
    conn->progress = bytes;
    uv_mutex_unlock(&t->mu);
}

void mls_conn_body_done(struct mls_conns *t, struct mls_conn *conn)
{
    if (!conn)
        return;
    uv_mutex_lock(&t->mu);
    conn->receiving = 0;
    uv_mutex_unlock(&t->mu);
}

void mls_conn_request_done(struct mls_conns *t, struct mls_conn *conn)
{
    if (!conn)
        return;
    uint64_t d = uv_hrtime() + t->idle_ns;
    uv_mutex_lock(&t->mu);
    conn->deadline = d;
    uv_mutex_unlock(&t->mu);
}

int mls_conn_address(const struct mls_conn *conn, unsigned char addr[16])
{
    /* (conn->peer is set when the connection opens and kept until it closes) */
    if (!conn || !conn->peer) {
        memset(addr, 0, 16);
        return -1;
    }
    memcpy(addr, conn->peer->addr, 16);
    return 0;
}

void mls_conn_set_linger(struct mls_conn *conn)
{
    if (conn)
        conn->linger = 1; /* read only by its connection's own thread, in mls_conn_notify */
}

int mls_peer_take(struct mls_conns *t, struct mls_conn *conn, struct mls_peer **peer, uint64_t n,
                  uint64_t max, uint64_t *held)
{
    if (!*peer && !conn)
        return 0;
    int rc = 0;
    uv_mutex_lock(&t->mu);
    struct mls_peer *p = *peer ? *peer : conn->peer;
    *held = p->bytes;
    if (n > max || p->bytes > max - n)
        rc = -1;
    else {
        p->bytes += n;
        *peer = p;
    }
    uv_mutex_unlock(&t->mu);
    return rc;
}

void mls_peer_give(struct mls_conns *t, struct mls_peer *peer, uint64_t n)
{
    if (!peer || !n)
        return;
    uv_mutex_lock(&t->mu);
    peer->bytes -= n;
    peer_release(t, peer);
    uv_mutex_unlock(&t->mu);
}

/* ---- The loop's thread ------------------------------------------------------------------ */

/* Reads and drops what the client has sent, a bounded amount (the loop has other work):
 * 1 while its side is open, 0 once it has closed it (or the connection failed). */
static int discard_input(int fd)
{
    char buf[16384];
    for (int reads = 0; reads < 64; reads++) {
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
    return 1;
}

static void linger_closed(uv_handle_t *h)
{
    struct mls_linger *l = h->data;
    /* What the client sent last is read first: a close with unread data would reset the
     * connection, and the client lose the answer it has not read yet. */
    discard_input(l->fd);
    close(l->fd);
    free(l);
}

/* Ends one lingering connection (l is already out of the lists). */
static void linger_end(struct mls_linger *l)
{
    struct mls_conns *t = l->table;
    atomic_fetch_add_explicit(&t->lingered, 1, memory_order_relaxed);
    uv_mutex_lock(&t->mu);
    t->num_lingering--;
    l->peer->lingering--;
    peer_release(t, l->peer);
    uv_mutex_unlock(&t->mu);
    uv_poll_stop(&l->poll);
    uv_close((uv_handle_t *)&l->poll, linger_closed);
}

static void linger_unlink(struct mls_linger *l)
{
    uv_mutex_lock(&l->table->mu);
    struct mls_linger **p = &l->table->lingering;
    while (*p != l)
        p = &(*p)->next;
    *p = l->next;
    uv_mutex_unlock(&l->table->mu);
}

static void on_linger_readable(uv_poll_t *p, int status, int events)
{
    struct mls_linger *l = p->data;
    (void)events;
    if (status == 0 && discard_input(l->fd))
        return; /* more may come */
    linger_unlink(l);
    linger_end(l);
}

static void on_async(uv_async_t *a)
{
    struct mls_conns *t = a->data;
    uv_mutex_lock(&t->mu);
    struct mls_linger *l = t->handoff;
    t->handoff = NULL;
    uv_mutex_unlock(&t->mu);
    while (l) {
        struct mls_linger *next = l->next;
        l->deadline = uv_hrtime() + (uint64_t)(MLS_LINGER_SECONDS * 1e9);
        l->poll.data = l;
        if (uv_poll_init_socket(t->loop, &l->poll, l->fd)) {
            uv_mutex_lock(&t->mu);
            t->num_lingering--;
            l->peer->lingering--;
            peer_release(t, l->peer);
            uv_mutex_unlock(&t->mu);
            close(l->fd);
            free(l);
        } else {
            uv_mutex_lock(&t->mu);
            l->next = t->lingering;
            t->lingering = l;
            uv_mutex_unlock(&t->mu);
            uv_poll_start(&l->poll, UV_READABLE | UV_DISCONNECT, on_linger_readable);
        }
        l = next;
    }
}

static void on_sweep(uv_timer_t *timer)
{
    struct mls_conns *t = timer->data;
    uint64_t now = uv_hrtime();
    uint64_t cut = 0;
    uv_mutex_lock(&t->mu);
    for (struct mls_conn *c = t->head; c; c = c->next) {
        char byte;
        if (c->receiving && !c->cut) {
            /* libmicrohttpd does not notice a client that closes in the middle of a body
             * either: it would hold the connection (its slot, its budget) until the
             * connection timeout. Closed with nothing left to read at two sweeps in a row
             * with no progress in between, the body can only be incomplete: a complete one
             * would have reached the handler (mls_conn_body_done) within a sweep. */
            if (recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
                if (c->eof_seen && c->eof_progress == c->progress) {
                    shutdown(c->fd, SHUT_RDWR);
                    c->cut = 1;
                }
                c->eof_seen = 1;
                c->eof_progress = c->progress;
            } else {
                c->eof_seen = 0;
            }
            continue;
        }
        if (!c->deadline || c->cut)
            continue; /* a request is being handled, or the connection is already closing */
        if (now > c->deadline) {
            /* libmicrohttpd sees the end of the stream and closes the connection itself. */
            shutdown(c->fd, SHUT_RDWR);
            c->cut = 1;
            cut++;
        } else if (recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
            /* Waiting for a request from a client that has closed its side: libmicrohttpd
             * does not notice an end of stream that arrived with the previous request (its
             * epoll is edge-triggered) and would keep the connection until its timeout.
             * Seen at two sweeps with the same deadline: a pipelined request already in
             * libmicrohttpd's buffer would have reached the handler in between. */
            if (c->idle_eof_deadline == c->deadline) {
                shutdown(c->fd, SHUT_RDWR);
                c->cut = 1;
            }
            c->idle_eof_deadline = c->deadline;
        } else {
            c->idle_eof_deadline = 0;
        }
    }
    uv_mutex_unlock(&t->mu);
    if (cut)
        atomic_fetch_add_explicit(&t->header_timeouts, cut, memory_order_relaxed);
    for (struct mls_linger *l = t->lingering, *next; l; l = next) {
        next = l->next;
        if (now > l->deadline) {
            linger_unlink(l);
            linger_end(l);
        }
    }
}

int mls_conns_init(struct mls_conns *t, uv_loop_t *loop, double header_timeout, double idle_timeout,
                   unsigned sweep_ms, unsigned linger_max)
{
    int rc;
    t->head = NULL;
    t->handoff = t->lingering = NULL;
    t->num_lingering = 0;
    memset(t->peers, 0, sizeof(t->peers));
    t->seed = (uint32_t)uv_hrtime() ^ (uint32_t)(uintptr_t)t;
    t->closing = 0;
    t->header_ns = (uint64_t)(header_timeout * 1e9);
    t->idle_ns = (uint64_t)(idle_timeout * 1e9);
    t->linger_max = linger_max < MLS_LINGER_MAX ? linger_max : MLS_LINGER_MAX;
    t->loop = NULL; /* set once everything is: the sign that there is something to close */
    atomic_init(&t->header_timeouts, 0);
    atomic_init(&t->lingered, 0);
    if ((rc = uv_mutex_init(&t->mu)))
        return rc;
    if ((rc = uv_async_init(loop, &t->async, on_async))) {
        uv_mutex_destroy(&t->mu);
        return rc;
    }
    t->async.data = t;
    uv_timer_init(loop, &t->sweep);
    t->sweep.data = t;
    uv_timer_start(&t->sweep, on_sweep, sweep_ms, sweep_ms);
    /* Neither handle keeps the loop alive: it runs until the drain ends. */
    uv_unref((uv_handle_t *)&t->sweep);
    uv_unref((uv_handle_t *)&t->async);
    t->loop = loop;
    return 0;
}

void mls_conns_close(struct mls_conns *t)
{
    uv_mutex_lock(&t->mu);
    t->closing = 1;
    uv_mutex_unlock(&t->mu);
    on_async(&t->async); /* take over what was handed off, to close it below */
    for (;;) {
        uv_mutex_lock(&t->mu);
        struct mls_linger *l = t->lingering;
        if (l)
            t->lingering = l->next;
        uv_mutex_unlock(&t->mu);
        if (!l)
            break;
        linger_end(l);
    }
    uv_timer_stop(&t->sweep);
    if (!uv_is_closing((uv_handle_t *)&t->sweep))
        uv_close((uv_handle_t *)&t->sweep, NULL);
    if (!uv_is_closing((uv_handle_t *)&t->async))
        uv_close((uv_handle_t *)&t->async, NULL);
}

unsigned mls_conns_in_transit(struct mls_conns *t)
{
    unsigned n = 0;
    uv_mutex_lock(&t->mu);
    for (struct mls_conn *c = t->head; c; c = c->next)
        n += !c->cut && in_transit(c->fd);
    uv_mutex_unlock(&t->mu);
    return n;
}

unsigned mls_conns_lingering(struct mls_conns *t)
{
    uv_mutex_lock(&t->mu);
    unsigned n = t->num_lingering;
    uv_mutex_unlock(&t->mu);
    return n;
}

void mls_conns_destroy(struct mls_conns *t)
{
    /* Handed off after the close (none in practice: closing refuses new ones). */
    for (struct mls_linger *l = t->handoff, *next; l; l = next) {
        next = l->next;
        close(l->fd);
        free(l);
    }
    t->handoff = NULL;
    /* Addresses left (none when every connection and request has ended). */
    for (size_t i = 0; i < MLS_PEER_BUCKETS; i++)
        for (struct mls_peer *p = t->peers[i], *next; p; p = next) {
            next = p->next;
            free(p);
        }
    uv_mutex_destroy(&t->mu);
}
