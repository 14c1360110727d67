#!/bin/bash
# The image's HEALTHCHECK: exit 0 while the server on 127.0.0.1:$MASKLOSS_PORT is alive. bash's
# /dev/tcp, so that the image needs no HTTP client.
#
# Plain HTTP: GET /healthz answered 200. With TLS on (MASKLOSS_TLS_CERT set) bash cannot speak
# HTTPS, so the probe sends a TLS 1.2 ClientHello and wants a TLS record back: the same
# libmicrohttpd thread that answers /healthz has read and answered it. Either a handshake record
# (0x16) or an alert (0x15: a TLS stack that refuses this hello) shows the server alive and
# speaking TLS.
set -u
port=${MASKLOSS_PORT:-8080}
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
if [ -z "${MASKLOSS_TLS_CERT:-}" ]; then
    printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
    head -1 <&3 | grep -q '^HTTP/1\.[01] 200 '
    exit
fi
# ClientHello, TLS 1.2: random 32 bytes (fixed: nothing is secret here), no session; ECDHE with
# ECDSA or RSA and AES-GCM or ChaCha20; extensions supported_groups (x25519, P-256, P-384,
# P-521), ec_point_formats (uncompressed), signature_algorithms (ECDSA P-256/P-384/P-521
# SHA-256/384/512, Ed25519, Ed448, RSA-PSS and PKCS#1 SHA-256/384): every key a certificate of
# the server's may hold, so that it answers with its handshake (with an Ed25519 certificate and
# no Ed25519 in the list it closed the connection without a byte, and the probe failed).
hello='\x16\x03\x01\x00\x67'\
'\x01\x00\x00\x63\x03\x03'\
'\x6d\x61\x73\x6b\x6c\x6f\x73\x73\x2d\x68\x65\x61\x6c\x74\x68\x63'\
'\x68\x65\x63\x6b\x2d\x63\x6c\x69\x65\x6e\x74\x68\x65\x6c\x6c\x6f'\
'\x00\x00\x0a\xc0\x2b\xc0\x2f\xc0\x2c\xc0\x30\xcc\xa9\x01\x00'\
'\x00\x30'\
'\x00\x0a\x00\x0a\x00\x08\x00\x1d\x00\x17\x00\x18\x00\x19'\
'\x00\x0b\x00\x02\x01\x00'\
'\x00\x0d\x00\x18\x00\x16\x04\x03\x05\x03\x06\x03\x08\x07\x08\x08\x08\x04\x08\x05\x04\x01\x05\x01\x06\x01\x02\x01'
printf "$hello" >&3
case $(head -c 1 <&3 | od -An -tx1 | tr -d ' ') in
15 | 16) exit 0 ;;
*) exit 1 ;;
esac
