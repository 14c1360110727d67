/*
 * conn.h -- connections as a whole, beyond one request: the deadline for a request's headers
 * and the lingering close.
 *
 * libmicrohttpd 0.9.75 restarts its connection timeout on every byte, so a client that
 * trickles a header byte now and then holds its connection for ever; and when it answers
 * before reading a request's body (413 from Content-Length, 400, 501), it closes the socket
 * with unread data, which makes the kernel send a reset that destroys the answer before the
 * client reads it. This table fixes both from outside libmicrohttpd:
 *
 *   - every connection has a deadline for the headers of its next request: --header-timeout
 *     after it opens, --connection-timeout after each answer. A sweep on the libuv loop shuts
 *     down (shutdown(2)) the sockets past their deadline, and those waiting for a request
 *     from a client that has closed its side; libmicrohttpd then sees the end of the stream
 *     and closes them as usual. The same for a client that closed in the middle of a body.
 *   - a connection marked to linger keeps its socket open, through a dup(2) taken as
 *     libmicrohttpd lets it go: libmicrohttpd has sent the answer and half-closed it
 *     (shutdown(SHUT_WR)); the loop reads and discards what the client still sends, for at
 *     most MLS_LINGER_SECONDS, then closes (RFC 9112 section 9.6; nginx's lingering_close).
 *
 * The table also knows each client address (struct mls_peer; an IPv6 /64 counts as one
 * address): its lingering sockets (at most
 * MLS_LINGER_PER_ADDRESS) and the bytes of the memory budget its requests hold, so that one
 * client cannot take all of either.
 *
 * Threads: mls_conn_notify() and the mls_conn_* calls run on libmicrohttpd's threads
 * (--http-threads; all the calls of one connection on the thread that accepted it), the sweep
 * and the lingering on the libuv loop's; one mutex guards the list of connections and the
 * table of addresses.
 */
#ifndef MLS_CONN_H
#define MLS_CONN_H

#include <stdatomic.h>
#include <stdint.h>

#include <microhttpd.h>
#include <uv.h>

/* The longest a closed connection lingers, how many may linger at once, and from one client
 * address (more are closed at once, as libmicrohttpd would). */
#define MLS_LINGER_SECONDS 5.0
#define MLS_LINGER_MAX 1024
#define MLS_LINGER_PER_ADDRESS 32

struct mls_conn;  /* one per TCP connection: libmicrohttpd's socket context */
struct mls_linger;
struct mls_peer; /* one per client address with a connection, a lingering socket or a share
                    of the memory budget */

/* Buckets of the table of client addresses (a power of two). */
#define MLS_PEER_BUCKETS 1024

struct mls_conns {
    uv_mutex_t mu;
    struct mls_conn *head;        /* open connections */
    struct mls_linger *handoff;   /* closed by libmicrohttpd, not yet seen by the loop */
    struct mls_linger *lingering; /* on the loop: reading until EOF or the deadline (the
                                     list is changed under the mutex, by the loop only) */
    unsigned num_lingering;       /* handoff + lingering */
    struct mls_peer *peers[MLS_PEER_BUCKETS]; /* by address */
    uint32_t seed;                            /* of their hash */
    uint64_t header_ns, idle_ns;  /* the two deadlines */
    unsigned linger_max;          /* sockets that may linger at once, at most MLS_LINGER_MAX */
    uv_loop_t *loop;
    uv_async_t async;
    uv_timer_t sweep;
    int closing;
    _Atomic uint64_t header_timeouts; /* connections shut down at their header deadline */
    _Atomic uint64_t lingered;        /* connections closed by lingering */
};

/* How often the loop looks for connections past their deadline (or half-closed), by default. */
#define MLS_SWEEP_MS 100

/* Starts the sweep on loop, every sweep_ms; at most linger_max sockets linger at once (the
 * descriptors kept for them). Returns 0 or a negative libuv error. */
int mls_conns_init(struct mls_conns *t, uv_loop_t *loop, double header_timeout, double idle_timeout,
                   unsigned sweep_ms, unsigned linger_max);
/* Closes every lingering socket and the loop's handles (the loop must then run to let them
 * close); connections closed by libmicrohttpd later are closed at once. */
void mls_conns_close(struct mls_conns *t);
/* Open connections that closing now could lose something on: the client has sent bytes not
 * read yet, or not all of an answer has reached it (any thread). libmicrohttpd's stop shuts
 * every socket down (SHUT_RDWR) and closes it: the drain waits for these first. */
unsigned mls_conns_in_transit(struct mls_conns *t);
/* Sockets lingering now (any thread). */
unsigned mls_conns_lingering(struct mls_conns *t);
/* After the loop has stopped: releases what is left. */
void mls_conns_destroy(struct mls_conns *t);

/* libmicrohttpd's MHD_OPTION_NOTIFY_CONNECTION callback (cls is the table). */
void mls_conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                     enum MHD_ConnectionNotificationCode code);

/* The connection of a request (NULL when its context could not be allocated). */
struct mls_conn *mls_conn_of(struct MHD_Connection *c);
/* The client's address as its key (IPv4 in the first 4 bytes, IPv6 by its /64): 0, or -1
 * (addr zeroed) when the connection has none. */
int mls_conn_address(const struct mls_conn *conn, unsigned char addr[16]);
/* A request's headers arrived: no deadline while it is handled; its body is being received. */
void mls_conn_headers_done(struct mls_conns *t, struct mls_conn *conn);
/* `bytes` of the body have arrived. */
void mls_conn_body_progress(struct mls_conns *t, struct mls_conn *conn, uint64_t bytes);
/* The whole request arrived (the handler's final call). */
void mls_conn_body_done(struct mls_conns *t, struct mls_conn *conn);
/* A request was answered: the next one's headers have until the idle deadline. */
void mls_conn_request_done(struct mls_conns *t, struct mls_conn *conn);
/* The answer is sent before the request was read: linger when libmicrohttpd closes. */
void mls_conn_set_linger(struct mls_conn *conn);

/*
 * One client address's share of the memory budget: the bytes its requests hold together.
 * Takes n bytes for a request on conn when that leaves the address's requests at most max:
 * 0, or -1 (nothing taken) when they would hold more, with what they hold in *held. *peer is
 * the request's address: NULL before its first take, set by it. A connection without a
 * context (its allocation failed) has no share to count: 0. Any thread.
 */
int mls_peer_take(struct mls_conns *t, struct mls_conn *conn, struct mls_peer **peer, uint64_t n,
                  uint64_t max, uint64_t *held);
/* Gives back n bytes taken for peer (also once its connection has closed). */
void mls_peer_give(struct mls_conns *t, struct mls_peer *peer, uint64_t n);

#endif /* MLS_CONN_H */
