/* http_client.h -- a small HTTP/1.1 client over sockets, plain or TLS (tls.h), for
 * `maskloss monitor`.
 *
 * One request per connection (Connection: close), no redirects, no proxies. Every size read
 * from the network is bounded before anything is allocated for it. */
#ifndef HTTP_CLIENT_H
#define HTTP_CLIENT_H

#include <stddef.h>

/* The status line and header fields of an answer, all together. */
#define HTTP_MAX_HEADER_BYTES (64 * 1024)
/* One header line (the status line included). */
#define HTTP_MAX_LINE_BYTES 8192
/* The body of an answer, after any chunked framing is removed. A 10000-step series of a monitor
 * is a few MB; the bound only guards against a peer that is not maskloss-server. */
#define HTTP_MAX_BODY_BYTES ((size_t)256 << 20)

/* Where requests go: parsed from "http[s]://HOST[:PORT][/PREFIX]" or "HOST[:PORT]". */
struct http_url {
    char host[256];  /* an IPv6 literal without its brackets */
    char port[8];    /* decimal, 1..65535; "80" (or "443" for https) when the URL has none */
    char base[1024]; /* the path prefix without a trailing '/', "" for none */
    int ipv6_literal;
    int tls; /* https:// */
};

struct tls_trust;

/* What every request of a command shares. */
struct http_client {
    int timeout_ms; /* bounds the connection, the TLS handshake and each wait for the peer */
    /* Sent as "Authorization: Bearer <token>" on every request; NULL for none. The caller has
     * checked it (cred_token_problem): it cannot break the header. Never in a message. */
    const char *token;
    const struct tls_trust *trust; /* for https:// URLs (tls_trust_new); NULL refuses them */
};

/* Failures of http_url_parse and http_request. Each comes with a sentence in `why`. */
enum http_error {
    HTTP_EURL = -1,      /* the URL is not one we can use (another scheme, no host, bad port) */
    HTTP_ERESOLVE = -2,  /* getaddrinfo failed */
    HTTP_ECONNECT = -3,  /* no address of the host accepted the connection in time */
    HTTP_EIO = -4,       /* send or receive failed, or the peer closed mid-answer */
    HTTP_ETIMEOUT = -5,  /* the peer was silent for timeout_ms while we waited */
    HTTP_EPROTOCOL = -6, /* the answer is not HTTP/1.x as we read it */
    HTTP_ETOOLARGE = -7, /* a header line, the header or the body exceeds the bounds above */
    HTTP_ENOMEM = -8,
    HTTP_ETLS = -9,   /* the TLS handshake failed (not a TLS server, no common version) */
    HTTP_ECERT = -10, /* the server's certificate is not trusted, or not for the URL's host */
};

struct http_response {
    int status;
    char content_type[128]; /* "" when absent; cut at 127 bytes */
    char retry_after[32];   /* Retry-After (seconds or an HTTP date), "" when absent */
    char *body;             /* body_len bytes plus a NUL; NULL only before a successful request */
    size_t body_len;
};

/* Parses url into *u. Returns 0, or HTTP_EURL with a sentence in why (why_len bytes). */
int http_url_parse(const char *url, struct http_url *u, char *why, size_t why_len);

/* "HOST:PORT" (brackets around an IPv6 literal), for messages. */
void http_url_authority(const struct http_url *u, char *out, size_t out_len);

/* Sends `method` for `target` (the path and query below u->base, starting with '/', already
 * percent-encoded) and reads the answer into *resp. A body (body_len bytes, may be 0) is sent
 * with Content-Length and `content_type` when `content_type` is not NULL. An https:// URL is
 * served over TLS with cl->trust, nothing sent before the certificate is verified. Interim 1xx
 * answers are skipped; the body is read by Content-Length, chunked framing, or up to the close
 * (over TLS, a close_notify).
 *
 * Returns 0 with *resp filled (free with http_response_free), whatever the HTTP status; else a
 * negative enum http_error with a sentence in why naming the server, and *resp left empty.
 * Reentrant; a peer that closes early raises no SIGPIPE (MSG_NOSIGNAL). */
int http_request(const struct http_client *cl, const struct http_url *u, const char *method,
                 const char *target, const char *content_type, const char *body, size_t body_len,
                 struct http_response *resp, char *why, size_t why_len);

void http_response_free(struct http_response *resp);

#endif /* HTTP_CLIENT_H */
