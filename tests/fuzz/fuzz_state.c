/*
 * fuzz_state.c -- --state on any bytes (server/state_url.c): which kind it is, its password,
 * and what the server prints of it.
 *
 * Invariants: the redacted form never holds the password libpq would read (plain, 4 bytes or
 * more), nor the one written (raw) unless it is "***" itself, and fits its buffer; a string the
 * server takes for a SQLite path is printed unchanged; scrubbing a message of the password
 * leaves neither form in it.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "state_url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4000 || memchr(data, 0, size))
        return 0; /* (a flag's value: a C string within --state's 4096 bytes) */
    char state[4096];
    memcpy(state, data, size);
    state[size] = 0;
    char out[4096], raw[1024], plain[1024];
    mls_store_redact(state, out, sizeof(out));
    FUZZ_CHECK(strlen(out) < sizeof(out), "redacted form past its buffer");
    if (!mls_store_is_pg(state)) {
        FUZZ_CHECK(!strcmp(out, state), "a SQLite path changed: %s", out);
        return 0;
    }
    mls_state_password(state, raw, plain, sizeof(raw));
    FUZZ_CHECK(strlen(raw) < sizeof(raw) && strlen(plain) < sizeof(plain), "password too long");
    if (strlen(plain) >= 4 && strlen(plain) < sizeof(plain) - 1 && strlen(out) < sizeof(out) - 8)
        FUZZ_CHECK(!strstr(out, plain), "the password %s in the redacted %s", plain, out);
    /* A message quoting the string, scrubbed as the store scrubs its errors. */
    char msg[4096 + 64];
    snprintf(msg, sizeof(msg), "cannot connect: \"%s\"", state);
    mls_state_scrub(msg, sizeof(msg), raw);
    mls_state_scrub(msg, sizeof(msg), plain);
    FUZZ_CHECK(strlen(msg) < sizeof(msg), "scrubbed message past its buffer");
    if (*raw && strlen(msg) < sizeof(msg) - 8 && !strstr("***", raw))
        FUZZ_CHECK(!strstr(msg, raw), "the password %s in the message %s", raw, msg);
    return 0;
}
