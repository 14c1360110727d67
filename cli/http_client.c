/*
 * http_client.c -- HTTP/1.1 requests over plain sockets or TLS (RFC 9112, RFC 9110 4.2.2),
 * for `maskloss monitor`.
 *
 * The socket stays non-blocking from the connect on, and every wait goes through poll() with
 * the caller's timeout, the TLS handshake's included: a server that accepts and never answers
 * cannot hang the command.
 */
#include "http_client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "tls.h"

/* conn_send and conn_recv: nothing moved, wait for the events given. */
#define WOULD_BLOCK (-100)

static void say(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (why && why_len)
        vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

/* ---- URL ---------------------------------------------------------------------------------- */

int http_url_parse(const char *url, struct http_url *u, char *why, size_t why_len)
{
    memset(u, 0, sizeof(*u));
    const char *p = url;
    const char *scheme_end = strstr(url, "://");
    if (scheme_end) {
        size_t n = (size_t)(scheme_end - url);
        u->tls = n == 5 && !strncasecmp(url, "https", 5);
        if (!u->tls && (n != 4 || strncasecmp(url, "http", 4))) {
            say(why, why_len, "%s: the URL must start with http:// or https://", url);
            return HTTP_EURL;
        }
        p = scheme_end + 3;
    }
    /* The authority ends at the path. */
    size_t alen = strcspn(p, "/?#");
    const char *host = p, *port = NULL;
    size_t hlen;
    if (alen && *p == '[') {
        const char *close = memchr(p, ']', alen);
        if (!close) {
            say(why, why_len, "%s: an IPv6 address needs its closing ']'", url);
            return HTTP_EURL;
        }
        host = p + 1;
        hlen = (size_t)(close - host);
        u->ipv6_literal = 1;
        if (close + 1 < p + alen) {
            if (close[1] != ':') {
                say(why, why_len, "%s: expected ':PORT' after ']'", url);
                return HTTP_EURL;
            }
            port = close + 2;
        }
    } else {
        const char *colon = memchr(p, ':', alen);
        hlen = colon ? (size_t)(colon - p) : alen;
        if (colon)
            port = colon + 1;
    }
    if (memchr(p, '@', alen)) {
        say(why, why_len, "%s: user information in the URL is not supported", url);
        return HTTP_EURL;
    }
    if (hlen == 0 || hlen >= sizeof(u->host)) {
        say(why, why_len, "%s: %s", url, hlen ? "the host name is too long" : "no host");
        return HTTP_EURL;
    }
    memcpy(u->host, host, hlen);
    if (port) {
        size_t plen = (size_t)(p + alen - port);
        unsigned long v = 0;
        for (size_t i = 0; i < plen && v <= 65535; i++) {
            if (port[i] < '0' || port[i] > '9') {
                v = 0;
                break;
            }
            v = v * 10 + (unsigned long)(port[i] - '0');
        }
        if (plen == 0 || v == 0 || v > 65535) {
            say(why, why_len, "%s: the port must be a number from 1 to 65535", url);
            return HTTP_EURL;
        }
        snprintf(u->port, sizeof(u->port), "%lu", v);
    } else {
        strcpy(u->port, u->tls ? "443" : "80");
    }
    const char *path = p + alen;
    if (*path == '?' || *path == '#') {
        say(why, why_len, "%s: the server URL takes no query or fragment", url);
        return HTTP_EURL;
    }
    size_t plen = strlen(path);
    while (plen && path[plen - 1] == '/')
        plen--;
    if (plen >= sizeof(u->base)) {
        say(why, why_len, "%s: the path is too long", url);
        return HTTP_EURL;
    }
    memcpy(u->base, path, plen);
    if (strpbrk(u->base, " \t\r\n")) {
        say(why, why_len, "%s: the path holds white space", url);
        return HTTP_EURL;
    }
    return 0;
}

void http_url_authority(const struct http_url *u, char *out, size_t out_len)
{
    snprintf(out, out_len, u->ipv6_literal ? "[%s]:%s" : "%s:%s", u->host, u->port);
}

/* ---- Connection ---------------------------------------------------------------------------- */

struct conn {
    int fd;
    struct tls_session *tls; /* NULL for http:// */
    int unclean_close;       /* the TLS peer closed without close_notify */
    size_t received;         /* bytes of the answer so far, for messages */
    int timeout_ms;
    const char *peer; /* HOST:PORT, for messages */
    char *why;
    size_t why_len;
    char buf[16384]; /* what was received and not yet consumed: buf[pos..len) */
    size_t pos, len;
};

/* Waits until fd is ready for `events`: 0, or HTTP_ETIMEOUT / HTTP_EIO. */
static int wait_for(struct conn *c, short events)
{
    struct pollfd p = {.fd = c->fd, .events = events};
    for (;;) {
        int n = poll(&p, 1, c->timeout_ms);
        if (n > 0)
            return 0; /* readable, writable, or an error the next call reports */
        if (n == 0) {
            say(c->why, c->why_len, "%s did not answer within %d s", c->peer,
                (c->timeout_ms + 999) / 1000);
            return HTTP_ETIMEOUT;
        }
        if (errno != EINTR) {
            say(c->why, c->why_len, "waiting for %s: %s", c->peer, strerror(errno));
            return HTTP_EIO;
        }
    }
}

static int connect_one(const struct addrinfo *ai, int timeout_ms, int *err)
{
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
        fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        goto fail;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    if (errno != EINPROGRESS)
        goto fail;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int n;
    do
        n = poll(&p, 1, timeout_ms);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        errno = ETIMEDOUT;
    if (n <= 0)
        goto fail;
    int so_error = 0;
    socklen_t len = sizeof(so_error);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) < 0)
        goto fail;
    if (so_error) {
        errno = so_error;
        goto fail;
    }
    return fd;
fail:
    *err = errno;
    close(fd);
    return -1;
}

/* Connects to the first address of u that accepts: 0 with c->fd set, or a negative code. */
static int open_conn(struct conn *c, const struct http_url *u)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(u->host, u->port, &hints, &res);
    if (rc) {
        say(c->why, c->why_len, "cannot resolve %s: %s", u->host,
            rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
        return HTTP_ERESOLVE;
    }
    int err = ECONNREFUSED;
    c->fd = -1;
    for (const struct addrinfo *ai = res; ai && c->fd < 0; ai = ai->ai_next)
        c->fd = connect_one(ai, c->timeout_ms, &err);
    freeaddrinfo(res);
    if (c->fd < 0) {
        say(c->why, c->why_len, "cannot connect to %s: %s", c->peer, strerror(err));
        return HTTP_ECONNECT;
    }
    return 0;
}

/* The TLS handshake on c->fd, the certificate verified: 0, or a negative code. */
static int start_tls(struct conn *c, const struct http_client *cl, const struct http_url *u)
{
    if (!cl->trust) {
        say(c->why, c->why_len, "%s: https:// needs a trust store (internal error)", c->peer);
        return HTTP_ETLS;
    }
    int rc = tls_session_new(&c->tls, cl->trust, c->fd, u->host, c->peer, c->why, c->why_len);
    short events = 0;
    while (rc == 0 && (rc = tls_handshake(c->tls, &events)) == TLS_AGAIN)
        if ((rc = wait_for(c, events)))
            return rc;
    switch (rc) {
    case 0:
        return 0;
    case TLS_ECERT:
        return HTTP_ECERT;
    case TLS_ENOMEM:
        return HTTP_ENOMEM;
    default:
        return HTTP_ETLS;
    }
}

/* A send or recv on the plain socket failed (errno): WOULD_BLOCK, or HTTP_EIO with why. */
static ssize_t socket_failed(struct conn *c, const char *doing)
{
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return WOULD_BLOCK;
    say(c->why, c->why_len, "%s %s: %s", doing, c->peer, strerror(errno));
    return HTTP_EIO;
}

/* Sends up to len bytes: how many (> 0), WOULD_BLOCK with *events, or a negative code. */
static ssize_t conn_send(struct conn *c, const char *data, size_t len, short *events)
{
    *events = POLLOUT;
    if (c->tls) {
        ssize_t n = tls_send(c->tls, data, len, events);
        return n == TLS_AGAIN ? WOULD_BLOCK : n < 0 ? HTTP_EIO : n;
    }
    ssize_t n;
    do
        n = send(c->fd, data, len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n >= 0 ? n : socket_failed(c, "sending to");
}

/* Receives up to len bytes: how many (> 0), 0 at the peer's close, WOULD_BLOCK with *events,
 * or a negative code. */
static ssize_t conn_recv(struct conn *c, char *buf, size_t len, short *events)
{
    *events = POLLIN;
    if (c->tls) {
        int clean = 1;
        ssize_t n = tls_recv(c->tls, buf, len, events, &clean);
        c->unclean_close = !clean;
        return n == TLS_AGAIN ? WOULD_BLOCK : n < 0 ? HTTP_EIO : n;
    }
    ssize_t n;
    do
        n = recv(c->fd, buf, len, 0);
    while (n < 0 && errno == EINTR);
    return n >= 0 ? n : socket_failed(c, "receiving from");
}

static int send_all(struct conn *c, const char *data, size_t len)
{
    while (len) {
        short events;
        ssize_t n = conn_send(c, data, len, &events);
        if (n == WOULD_BLOCK) {
            int rc = wait_for(c, events);
            if (rc)
                return rc;
            continue;
        }
        if (n < 0)
            return (int)n;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Receives more into c->buf (which must have room): 1 when bytes came, 0 at the peer's close,
 * or a negative code. */
static int fill(struct conn *c)
{
    if (c->pos == c->len)
        c->pos = c->len = 0;
    for (;;) {
        short events;
        ssize_t n = conn_recv(c, c->buf + c->len, sizeof(c->buf) - c->len, &events);
        if (n == WOULD_BLOCK) {
            int rc = wait_for(c, events);
            if (rc)
                return rc;
            continue;
        }
        if (n <= 0)
            return (int)n;
        c->len += (size_t)n;
        c->received += (size_t)n;
        return 1;
    }
}

static int closed_early(struct conn *c)
{
    if (!c->received && !c->tls)
        /* What maskloss-server does on its TLS port with a request in clear (no HTTP answer
         * there: it could be read by anyone on the way). */
        say(c->why, c->why_len,
            "%s closed the connection without answering (an https:// server? a TLS port "
            "takes no plain HTTP)",
            c->peer);
    else
        say(c->why, c->why_len, "%s closed the connection before the answer was complete", c->peer);
    return HTTP_EIO;
}

static int malformed(struct conn *c, const char *what)
{
    say(c->why, c->why_len, "%s sent a malformed answer: %s", c->peer, what);
    return HTTP_EPROTOCOL;
}

/* Reads one line, without its LF (and CR), into line (HTTP_MAX_LINE_BYTES): its length, or a
 * negative code. *budget is what is left of the header's bytes; it is charged the line. */
static long read_line(struct conn *c, char *line, size_t *budget)
{
    size_t n = 0;
    for (;;) {
        if (c->pos == c->len) {
            int rc = fill(c);
            if (rc < 0)
                return rc;
            if (rc == 0)
                return closed_early(c);
        }
        char ch = c->buf[c->pos++];
        if (*budget == 0) {
            say(c->why, c->why_len, "%s sent a header over %d bytes", c->peer,
                HTTP_MAX_HEADER_BYTES);
            return HTTP_ETOOLARGE;
        }
        (*budget)--;
        if (ch == '\n')
            break;
        if (n == HTTP_MAX_LINE_BYTES - 1) {
            say(c->why, c->why_len, "%s sent a header line over %d bytes", c->peer,
                HTTP_MAX_LINE_BYTES);
            return HTTP_ETOOLARGE;
        }
        line[n++] = ch;
    }
    if (n && line[n - 1] == '\r')
        n--;
    line[n] = '\0';
    return (long)n;
}

/* Copies exactly len bytes of the answer to dst. */
static int read_exact(struct conn *c, char *dst, size_t len)
{
    while (len) {
        if (c->pos == c->len) {
            int rc = fill(c);
            if (rc < 0)
                return rc;
            if (rc == 0)
                return closed_early(c);
        }
        size_t n = c->len - c->pos;
        if (n > len)
            n = len;
        memcpy(dst, c->buf + c->pos, n);
        c->pos += n;
        dst += n;
        len -= n;
    }
    return 0;
}

/* ---- Answer --------------------------------------------------------------------------------- */

struct head {
    int status;
    int chunked;
    int has_length;
    size_t length;
    char content_type[128];
    char retry_after[32];
};

static int is_token_char(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
           strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/* Content-Length: digits only, bounded before anything is allocated. A list of equal values
 * ("5, 5") is one value (RFC 9110 8.6); different ones are refused. */
static int parse_length(struct conn *c, struct head *h, char *value)
{
    char *save = NULL;
    for (char *item = strtok_r(value, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        item = trim(item);
        if (!*item)
            return malformed(c, "an empty Content-Length");
        size_t v = 0;
        for (const char *d = item; *d; d++) {
            if (*d < '0' || *d > '9')
                return malformed(c, "a Content-Length that is not a number");
            if (v <= HTTP_MAX_BODY_BYTES) /* past it, v stays too large without overflowing */
                v = v * 10 + (size_t)(*d - '0');
        }
        if (v > HTTP_MAX_BODY_BYTES) {
            say(c->why, c->why_len, "%s announced a body of %s bytes, over the limit of %zu",
                c->peer, item, HTTP_MAX_BODY_BYTES);
            return HTTP_ETOOLARGE;
        }
        if (h->has_length && h->length != v)
            return malformed(c, "Content-Length values that differ");
        h->has_length = 1;
        h->length = v;
    }
    return 0;
}

/* Reads a status line and its header fields into *h. */
static int read_head(struct conn *c, struct head *h, char *line, size_t *budget)
{
    memset(h, 0, sizeof(*h));
    long n = read_line(c, line, budget);
    if (n < 0)
        return (int)n;
    /* HTTP/1.x SP 3DIGIT [SP reason] */
    if (strncmp(line, "HTTP/1.", 7) || line[7] < '0' || line[7] > '9' || line[8] != ' ' ||
        line[9] < '1' || line[9] > '5' || line[10] < '0' || line[10] > '9' || line[11] < '0' ||
        line[11] > '9' || (line[12] != ' ' && line[12] != '\0'))
        return malformed(c, "no HTTP/1.x status line");
    h->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    for (;;) {
        n = read_line(c, line, budget);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return 0;
        char *colon = strchr(line, ':');
        if (!colon || colon == line)
            return malformed(c, "a header line without a name");
        for (const char *k = line; k < colon; k++)
            if (!is_token_char(*k))
                return malformed(c, "a header name with a character HTTP does not allow");
        *colon = '\0';
        char *value = trim(colon + 1);
        if (!strcasecmp(line, "Content-Length")) {
            int rc = parse_length(c, h, value);
            if (rc)
                return rc;
        } else if (!strcasecmp(line, "Transfer-Encoding")) {
            /* Only chunked is understood; it must be the last coding (RFC 9112 6.3). */
            if (strcasecmp(value, "chunked") && strcasecmp(value, "identity")) {
                say(c->why, c->why_len,
                    "%s answered with Transfer-Encoding '%.100s', which "
                    "this client does not read",
                    c->peer, value);
                return HTTP_EPROTOCOL;
            }
            h->chunked = !strcasecmp(value, "chunked");
        } else if (!strcasecmp(line, "Content-Type")) {
            snprintf(h->content_type, sizeof(h->content_type), "%s", value);
        } else if (!strcasecmp(line, "Retry-After")) {
            snprintf(h->retry_after, sizeof(h->retry_after), "%s", value);
        }
    }
}

/* Appends len bytes of the answer to the body (*cap, growing by doubling up to the bound). */
static int body_reserve(struct conn *c, struct http_response *r, size_t *cap, size_t more)
{
    if (more > HTTP_MAX_BODY_BYTES - r->body_len) {
        say(c->why, c->why_len, "%s sent a body over the limit of %zu bytes", c->peer,
            HTTP_MAX_BODY_BYTES);
        return HTTP_ETOOLARGE;
    }
    size_t need = r->body_len + more + 1; /* the NUL */
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 4096;
    while (ncap < need)
        ncap *= 2;
    if (ncap > HTTP_MAX_BODY_BYTES + 1)
        ncap = HTTP_MAX_BODY_BYTES + 1;
    char *p = realloc(r->body, ncap);
    if (!p) {
        say(c->why, c->why_len, "out of memory reading the answer of %s", c->peer);
        return HTTP_ENOMEM;
    }
    r->body = p;
    *cap = ncap;
    return 0;
}

/* chunk-size [;ext] CRLF data CRLF ... 0 CRLF [trailers] CRLF (RFC 9112 7.1). */
static int read_chunked(struct conn *c, struct http_response *r, size_t *cap, char *line)
{
    size_t budget = HTTP_MAX_HEADER_BYTES; /* for the size lines and trailers together */
    for (;;) {
        long n = read_line(c, line, &budget);
        if (n < 0)
            return (int)n;
        size_t size = 0, digits = 0;
        const char *p = line;
        for (;; p++, digits++) {
            int d;
            if (*p >= '0' && *p <= '9')
                d = *p - '0';
            else if (*p >= 'a' && *p <= 'f')
                d = *p - 'a' + 10;
            else if (*p >= 'A' && *p <= 'F')
                d = *p - 'A' + 10;
            else
                break;
            if (size > HTTP_MAX_BODY_BYTES)
                continue; /* the reserve below refuses it; keep size bounded */
            size = size * 16 + (size_t)d;
        }
        if (!digits || (*p && *p != ';' && *p != ' ' && *p != '\t'))
            return malformed(c, "a bad chunk size");
        if (size == 0)
            break;
        int rc = body_reserve(c, r, cap, size);
        if (rc)
            return rc;
        rc = read_exact(c, r->body + r->body_len, size);
        if (rc)
            return rc;
        r->body_len += size;
        n = read_line(c, line, &budget);
        if (n < 0)
            return (int)n;
        if (n)
            return malformed(c, "a chunk longer than its size");
    }
    for (;;) { /* trailer fields, ignored */
        long n = read_line(c, line, &budget);
        if (n <= 0)
            return (int)n;
    }
}

static int read_answer(struct conn *c, const char *method, struct http_response *r)
{
    char *line = malloc(HTTP_MAX_LINE_BYTES);
    if (!line) {
        say(c->why, c->why_len, "out of memory");
        return HTTP_ENOMEM;
    }
    size_t budget = HTTP_MAX_HEADER_BYTES;
    size_t cap = 0;
    struct head h;
    int rc;
    /* Interim answers (100 Continue, 103 Early Hints) come before the final one. */
    do
        rc = read_head(c, &h, line, &budget);
    while (!rc && h.status >= 100 && h.status < 200 && h.status != 101);
    if (rc)
        goto done;
    if (h.status == 101) {
        rc = malformed(c, "101 Switching Protocols, never asked for");
        goto done;
    }
    r->status = h.status;
    memcpy(r->content_type, h.content_type, sizeof(r->content_type));
    memcpy(r->retry_after, h.retry_after, sizeof(r->retry_after));
    if ((rc = body_reserve(c, r, &cap, 0)))
        goto done;
    if (!strcmp(method, "HEAD") || h.status == 204 || h.status == 304) {
        /* no body, whatever the header says (RFC 9112 6.3) */
    } else if (h.chunked) {
        rc = read_chunked(c, r, &cap, line);
    } else if (h.has_length) {
        if (!(rc = body_reserve(c, r, &cap, h.length)) && !(rc = read_exact(c, r->body, h.length)))
            r->body_len = h.length;
    } else {
        /* Neither: the body ends with the connection (we asked for Connection: close). */
        for (;;) {
            if (c->pos == c->len) {
                int got = fill(c);
                if (got < 0) {
                    rc = got;
                    break;
                }
                if (got == 0 && c->unclean_close)
                    rc = closed_early(c); /* a truncation cannot be told from the end */
                if (got == 0)
                    break;
            }
            size_t n = c->len - c->pos;
            if ((rc = body_reserve(c, r, &cap, n)))
                break;
            memcpy(r->body + r->body_len, c->buf + c->pos, n);
            r->body_len += n;
            c->pos = c->len;
        }
    }
done:
    if (!rc)
        r->body[r->body_len] = '\0';
    free(line);
    return rc;
}

/* ---- Request --------------------------------------------------------------------------------- */

int http_request(const struct http_client *cl, const struct http_url *u, const char *method,
                 const char *target, const char *content_type, const char *body, size_t body_len,
                 struct http_response *resp, char *why, size_t why_len)
{
    memset(resp, 0, sizeof(*resp));
    char peer[300];
    http_url_authority(u, peer, sizeof(peer));
    struct conn *c = malloc(sizeof(*c));
    if (!c) {
        say(why, why_len, "out of memory");
        return HTTP_ENOMEM;
    }
    memset(c, 0, sizeof(*c));
    c->timeout_ms = cl->timeout_ms;
    c->peer = peer;
    c->why = why;
    c->why_len = why_len;
    c->fd = -1;
    char *head = NULL;
    int rc = open_conn(c, u);
    if (!rc && u->tls)
        rc = start_tls(c, cl, u);
    if (rc)
        goto done;
    /* The Host field names the port always: the server may sit behind a port mapping. */
    size_t cap = strlen(method) + strlen(u->base) + strlen(target) + strlen(peer) +
                 (content_type ? strlen(content_type) : 0) + (cl->token ? strlen(cl->token) : 0) +
                 256;
    head = malloc(cap);
    if (!head) {
        say(why, why_len, "out of memory");
        rc = HTTP_ENOMEM;
        goto done;
    }
    int n = snprintf(head, cap,
                     "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: maskloss\r\n"
                     "Accept: application/json\r\nConnection: close\r\n",
                     method, u->base, target, peer);
    if (cl->token)
        n += snprintf(head + n, cap - (size_t)n, "Authorization: Bearer %s\r\n", cl->token);
    if (content_type)
        n += snprintf(head + n, cap - (size_t)n, "Content-Type: %s\r\nContent-Length: %zu\r\n",
                      content_type, body_len);
    n += snprintf(head + n, cap - (size_t)n, "\r\n");
    rc = send_all(c, head, (size_t)n);
    if (!rc && content_type && body_len)
        rc = send_all(c, body, body_len);
    if (rc == HTTP_EIO) {
        /* A server may answer and close before reading all of a body it refuses (413): its
         * answer is more useful than the send's error. */
        char send_why[256];
        snprintf(send_why, sizeof(send_why), "%s", why ? why : "");
        rc = read_answer(c, method, resp);
        if (rc) {
            http_response_free(resp);
            say(why, why_len, "%s", send_why);
            rc = HTTP_EIO;
        }
        goto done;
    }
    if (!rc)
        rc = read_answer(c, method, resp);
done:
    if (rc) {
        http_response_free(resp);
        memset(resp, 0, sizeof(*resp));
    }
    tls_session_free(c->tls);
    if (c->fd >= 0)
        close(c->fd);
    free(head);
    free(c);
    return rc;
}

void http_response_free(struct http_response *resp)
{
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
}
