/*
 * tls.h -- TLS client sessions (GnuTLS) over a connected non-blocking socket, for
 * http_client.c's https:// URLs.
 *
 * TLS 1.2 and 1.3 only. The server's certificate chain is verified against the system's trust
 * store, or against a CA file instead, and must name the host of the URL (a DNS name, or an IP
 * address in its subjectAltName). Nothing here waits: a call that would block returns
 * TLS_AGAIN with the poll() events to wait for, and the caller waits under its own timeout.
 */
#ifndef TLS_H
#define TLS_H

#include <stddef.h>
#include <sys/types.h>

struct tls_trust;   /* the certificates trusted; one for every request of a command */
struct tls_session; /* one connection's */

enum tls_result {
    TLS_AGAIN = -1, /* would block: wait for *events, then call again with the same arguments */
    TLS_FAIL = -2,  /* the handshake or a record failed; why says so */
    TLS_ECERT = -3, /* the certificate is not trusted or not the host's; why says which */
    TLS_ENOMEM = -4,
};

/*
 * The CA certificates of ca_pem (ca_len bytes of PEM: one or more certificates), or the
 * system's trust store when ca_pem is NULL. Returns 0 with *out set (free with
 * tls_trust_free), or TLS_FAIL / TLS_ENOMEM with a sentence in why.
 */
int tls_trust_new(struct tls_trust **out, const char *ca_pem, size_t ca_len, char *why,
                  size_t why_len);
void tls_trust_free(struct tls_trust *t);

/*
 * A client session on fd (connected, non-blocking) for host (a DNS name, or an IP address
 * without brackets; the name sent in SNI unless an address, and the name the certificate must
 * match). peer ("HOST:PORT") names the server in messages; it and why must outlive the session.
 * Returns 0 with *out set (free with tls_session_free, which leaves fd open), or a negative
 * enum tls_result.
 */
int tls_session_new(struct tls_session **out, const struct tls_trust *t, int fd, const char *host,
                    const char *peer, char *why, size_t why_len);

/* Advances the handshake: 0 once done (the certificate verified), TLS_AGAIN with *events, or
 * TLS_FAIL / TLS_ECERT with a sentence in the session's why. */
int tls_handshake(struct tls_session *s, short *events);

/* Sends up to len bytes: how many (> 0), or TLS_AGAIN with *events, or TLS_FAIL. */
ssize_t tls_send(struct tls_session *s, const void *data, size_t len, short *events);

/* Receives up to len bytes: how many (> 0); 0 at the peer's close, with *clean telling whether
 * it was a TLS close_notify (an answer delimited by the close is complete only then, RFC 9112
 * 9.8); or TLS_AGAIN with *events, or TLS_FAIL. */
ssize_t tls_recv(struct tls_session *s, void *buf, size_t len, short *events, int *clean);

/* Sends close_notify if it can without waiting, and frees the session. NULL is a no-op. */
void tls_session_free(struct tls_session *s);

#endif /* TLS_H */
