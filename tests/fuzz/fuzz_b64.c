/*
 * fuzz_b64.c -- base64 text as tensors carry it ("b64"): mlp_b64_decoded_size and
 * mlp_b64_decode on any bytes.
 *
 * Invariants: decoding into a buffer of exactly mlp_b64_decoded_size bytes never writes
 * past it, and a success fills it exactly (the decoder of request.c relies on both); a
 * failure names an offset inside the text; the decoded bytes, encoded again
 * (mlp_b64_encode, 4 characters per 3 bytes, padded), decode to the same bytes.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    size_t want = mlp_b64_decoded_size(text, size);
    FUZZ_CHECK(want <= size / 4 * 3 + 2, "%zu bytes from %zu characters", want, size);
    unsigned char *out = malloc(want ? want : 1);
    FUZZ_CHECK(out != NULL, "out of memory");
    long long got = mlp_b64_decode(text, size, out);
    if (got < 0) {
        FUZZ_CHECK((unsigned long long)(-got - 1) <= size, "offset %lld beyond %zu characters",
                   -got - 1, size);
        free(out);
        return 0;
    }
    FUZZ_CHECK((size_t)got == want, "decoded %lld bytes, mlp_b64_decoded_size said %zu", got,
               want);

    struct mlp_buf enc = {0};
    mlp_b64_encode(&enc, out, (size_t)got);
    FUZZ_CHECK(!enc.failed, "out of memory");
    FUZZ_CHECK(enc.len == ((size_t)got + 2) / 3 * 4, "%zu characters for %lld bytes", enc.len,
               got);
    size_t want2 = mlp_b64_decoded_size(enc.data ? enc.data : "", enc.len);
    FUZZ_CHECK(want2 == (size_t)got, "the encoding says %zu bytes, not %lld", want2, got);
    unsigned char *again = malloc(want2 ? want2 : 1);
    FUZZ_CHECK(again != NULL, "out of memory");
    long long got2 = mlp_b64_decode(enc.data ? enc.data : "", enc.len, again);
    FUZZ_CHECK(got2 == got && (got == 0 || !memcmp(again, out, (size_t)got)),
               "decode(encode(x)) != x (%lld bytes, %lld back)", got, got2);
    free(again);
    free(enc.data);
    free(out);
    return 0;
}
