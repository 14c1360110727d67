/*
 * tls.c -- TLS client sessions through GnuTLS (tls.h).
 *
 * GnuTLS does the checking itself: gnutls_session_set_verify_cert makes the handshake verify
 * the chain against the credentials' trust and the certificate against the host (RFC 6125 for
 * names; an address only against an iPAddress subjectAltName, never the common name), so no
 * request is ever sent before both hold. This file only turns its verdicts into sentences.
 */
#include "tls.h"

#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

struct tls_trust {
    gnutls_certificate_credentials_t creds;
    int from_system; /* the system's store (its emptiness is worth saying) */
    int count;       /* certificates trusted */
};

struct tls_session {
    gnutls_session_t session;
    const char *host, *peer;
    const struct tls_trust *trust;
    int established; /* the handshake is done: a close_notify may be sent */
    char *why;
    size_t why_len;
};

/* TLS 1.2 and 1.3 only, on top of the system's policy (Debian's /etc/gnutls/config). */
static const char versions[] = "-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";

/* Writes the sentence of a failure into why (why_len bytes; NULL for none): returns code. */
static int fail(char *why, size_t why_len, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (why && why_len)
        vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
    return code;
}

/* ---- Trust ------------------------------------------------------------------------------- */

int tls_trust_new(struct tls_trust **out, const char *ca_pem, size_t ca_len, char *why,
                  size_t why_len)
{
    struct tls_trust *t = calloc(1, sizeof(*t));
    if (!t || gnutls_certificate_allocate_credentials(&t->creds) < 0) {
        free(t);
        return fail(why, why_len, TLS_ENOMEM, "out of memory");
    }
    if (!ca_pem) {
        /* An empty or missing store is not an error here: the handshake then says that the
         * certificate is not trusted, and how to trust it. */
        int rc = gnutls_certificate_set_x509_system_trust(t->creds);
        t->from_system = 1;
        t->count = rc > 0 ? rc : 0;
        *out = t;
        return 0;
    }
    gnutls_datum_t d = {(unsigned char *)ca_pem, (unsigned)ca_len};
    int rc = gnutls_certificate_set_x509_trust_mem(t->creds, &d, GNUTLS_X509_FMT_PEM);
    if (rc <= 0) {
        tls_trust_free(t);
        if (rc == 0)
            return fail(why, why_len, TLS_FAIL,
                        "no PEM certificate in it (\"-----BEGIN CERTIFICATE-----\")");
        return fail(why, why_len, TLS_FAIL, "not PEM certificates: %s", gnutls_strerror(rc));
    }
    t->count = rc;
    *out = t;
    return 0;
}

void tls_trust_free(struct tls_trust *t)
{
    if (!t)
        return;
    gnutls_certificate_free_credentials(t->creds);
    free(t);
}

/* ---- Session ----------------------------------------------------------------------------- */

static int is_address(const char *host)
{
    unsigned char addr[16];
    return inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
}

int tls_session_new(struct tls_session **out, const struct tls_trust *t, int fd, const char *host,
                    const char *peer, char *why, size_t why_len)
{
    struct tls_session *s = calloc(1, sizeof(*s));
    if (!s)
        return fail(why, why_len, TLS_ENOMEM, "out of memory");
    *s = (struct tls_session){
        .host = host, .peer = peer, .trust = t, .why = why, .why_len = why_len};
    int rc = gnutls_init(&s->session, GNUTLS_CLIENT | GNUTLS_NONBLOCK);
    if (rc < 0) {
        free(s);
        return fail(why, why_len, TLS_ENOMEM, "TLS: %s", gnutls_strerror(rc));
    }
    const char *where = NULL;
    rc = gnutls_set_default_priority_append(s->session, versions, &where, 0);
    if (rc >= 0)
        rc = gnutls_credentials_set(s->session, GNUTLS_CRD_CERTIFICATE, t->creds);
    /* SNI carries a DNS name only (RFC 6066 3). */
    if (rc >= 0 && !is_address(host))
        rc = gnutls_server_name_set(s->session, GNUTLS_NAME_DNS, host, strlen(host));
    if (rc < 0) {
        tls_session_free(s);
        return fail(why, why_len, TLS_FAIL, "TLS set-up for %s: %s", peer, gnutls_strerror(rc));
    }
    gnutls_session_set_verify_cert(s->session, host, 0);
    gnutls_transport_set_int(s->session, fd);
    *out = s;
    return 0;
}

/* The names the server's certificate is for (its subjectAltNames), for a message. */
static void cert_names(struct tls_session *s, char *out, size_t out_len)
{
    unsigned n = 0;
    const gnutls_datum_t *chain = gnutls_certificate_get_peers(s->session, &n);
    gnutls_x509_crt_t crt;
    out[0] = '\0';
    if (!chain || !n || gnutls_x509_crt_init(&crt) < 0)
        return;
    if (gnutls_x509_crt_import(crt, &chain[0], GNUTLS_X509_FMT_DER) == 0) {
        size_t used = 0;
        for (unsigned i = 0; used + 1 < out_len; i++) {
            char name[256];
            size_t len = sizeof(name) - 1;
            int type = gnutls_x509_crt_get_subject_alt_name(crt, i, name, &len, NULL);
            if (type < 0 && type != GNUTLS_E_SHORT_MEMORY_BUFFER)
                break;
            char text[INET6_ADDRSTRLEN];
            const char *shown = NULL;
            if (type == GNUTLS_SAN_DNSNAME) {
                name[len] = '\0';
                shown = name;
            } else if (type == GNUTLS_SAN_IPADDRESS && (len == 4 || len == 16)) {
                shown = inet_ntop(len == 4 ? AF_INET : AF_INET6, name, text, sizeof(text));
            }
            if (shown)
                used +=
                    (size_t)snprintf(out + used, out_len - used, "%s%s", used ? ", " : "", shown);
        }
    }
    gnutls_x509_crt_deinit(crt);
}

/* The handshake refused the certificate: says why, the most useful reason first. */
static int certificate_refused(struct tls_session *s)
{
    unsigned status = gnutls_session_get_verify_cert_status(s->session);
    char names[256], other[256] = "";
    if (status & GNUTLS_CERT_SIGNER_NOT_FOUND) {
        return fail(s->why, s->why_len, TLS_ECERT,
                    "%s: certificate not trusted (issuer unknown): pass --cacert FILE, the PEM "
                    "certificate of the CA that signed it (or the server's own, if self-signed)%s",
                    s->peer,
                    s->trust->from_system && s->trust->count == 0
                        ? "; the system trust store is empty"
                        : "");
    }
    if (status & GNUTLS_CERT_UNEXPECTED_OWNER) {
        cert_names(s, names, sizeof(names));
        return fail(s->why, s->why_len, TLS_ECERT,
                    "%s: host name mismatch: the certificate is not for %s (it names %s); "
                    "connect by a name it names",
                    s->peer, s->host, names[0] ? names : "no DNS name or address");
    }
    gnutls_datum_t text = {NULL, 0};
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0) == 0) {
        snprintf(other, sizeof(other), "%s", (const char *)text.data);
        gnutls_free(text.data);
    }
    return fail(s->why, s->why_len, TLS_ECERT, "%s: the certificate is refused: %s", s->peer,
                other[0] ? other : "verification failed");
}

/* A fatal handshake error: the server's alert when it sent one (protocol_version: it wants a
 * TLS this client does not speak), else what GnuTLS saw (a plain HTTP answer reads as an
 * unexpected packet). */
static int handshake_failed(struct tls_session *s, int rc)
{
    if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED)
        return fail(s->why, s->why_len, TLS_FAIL,
                    "TLS handshake with %s failed: the server sent the alert '%s' (this client "
                    "speaks TLS 1.2 and 1.3 only)",
                    s->peer, gnutls_alert_get_name(gnutls_alert_get(s->session)));
    return fail(s->why, s->why_len, TLS_FAIL,
                "TLS handshake with %s failed: %s (does it serve HTTPS on that port?)", s->peer,
                gnutls_strerror(rc));
}

/* GNUTLS_E_AGAIN: which way the session waits (gnutls_record_get_direction: 1 for a write). */
static int again(struct tls_session *s, short *events)
{
    *events = gnutls_record_get_direction(s->session) ? POLLOUT : POLLIN;
    return TLS_AGAIN;
}

int tls_handshake(struct tls_session *s, short *events)
{
    for (;;) {
        int rc = gnutls_handshake(s->session);
        if (rc == GNUTLS_E_SUCCESS) {
            s->established = 1;
            return 0;
        }
        if (rc == GNUTLS_E_AGAIN)
            return again(s, events);
        if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR)
            return certificate_refused(s);
        if (gnutls_error_is_fatal(rc))
            return handshake_failed(s, rc);
        /* GNUTLS_E_INTERRUPTED, a warning alert: go on */
    }
}

static ssize_t record_failed(struct tls_session *s, ssize_t rc)
{
    return fail(s->why, s->why_len, TLS_FAIL, "TLS with %s: %s", s->peer, gnutls_strerror((int)rc));
}

ssize_t tls_send(struct tls_session *s, const void *data, size_t len, short *events)
{
    for (;;) {
        ssize_t n = gnutls_record_send(s->session, data, len);
        if (n >= 0)
            return n;
        if (n == GNUTLS_E_AGAIN)
            return again(s, events);
        if (n != GNUTLS_E_INTERRUPTED)
            return record_failed(s, n);
    }
}

ssize_t tls_recv(struct tls_session *s, void *buf, size_t len, short *events, int *clean)
{
    for (;;) {
        ssize_t n = gnutls_record_recv(s->session, buf, len);
        if (n >= 0) {
            *clean = 1;
            return n;
        }
        if (n == GNUTLS_E_AGAIN)
            return again(s, events);
        if (n == GNUTLS_E_PREMATURE_TERMINATION) {
            *clean = 0; /* closed without close_notify: what came may be cut short */
            return 0;
        }
        /* Non-fatal: interrupted, a warning alert, a TLS 1.2 renegotiation request (ignored:
         * the server then goes on or closes) */
        if (gnutls_error_is_fatal((int)n))
            return record_failed(s, n);
    }
}

void tls_session_free(struct tls_session *s)
{
    if (!s)
        return;
    /* One try, without waiting: the request is done, and a server that does not read its
     * close_notify loses nothing. */
    if (s->established)
        gnutls_bye(s->session, GNUTLS_SHUT_WR);
    gnutls_deinit(s->session);
    free(s);
}
