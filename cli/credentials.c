/*
 * credentials.c -- the token and the CA file of `maskloss monitor` (credentials.h).
 */
#include "credentials.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(CRED_TOKEN_MAX == 256, "the messages below say 256");

static const char too_large[] = "larger than allowed";
static const char token_too_long[] = "the token is over 256 bytes, more than the server reads";

const char *cred_token_problem(const char *token)
{
    size_t n = strlen(token);
    if (n == 0)
        return "the token is empty";
    if (n > CRED_TOKEN_MAX)
        return token_too_long;
    for (const unsigned char *p = (const unsigned char *)token; *p; p++) {
        if (*p <= ' ' || *p == 0x7f)
            return "the token holds a space, a line break or another control character";
        if (*p > 0x7f)
            return "the token holds a byte outside printable ASCII";
    }
    return NULL;
}

char *cred_read_file(const char *path, size_t max, size_t *len, const char **why)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *why = strerror(errno);
        return NULL;
    }
    struct stat st;
    char *text = NULL;
    size_t n = 0, cap = 0;
    *why = NULL;
    if (fstat(fd, &st))
        *why = strerror(errno);
    else if (S_ISDIR(st.st_mode))
        *why = "a directory";
    else if (S_ISREG(st.st_mode) && (size_t)st.st_size > max)
        *why = too_large;
    /* A pipe's size is not known before it ends: read until then, or one byte past max. */
    while (!*why) {
        if (n + 1 >= cap) { /* the NUL needs a byte */
            size_t ncap = cap ? 2 * cap : 4096;
            if (ncap > max + 2)
                ncap = max + 2; /* room for one byte too many and the NUL */
            char *p = realloc(text, ncap);
            if (!p) {
                *why = "out of memory";
                break;
            }
            text = p;
            cap = ncap;
        }
        ssize_t got = read(fd, text + n, cap - 1 - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            *why = strerror(errno);
        else if (got == 0)
            break;
        else if ((n += (size_t)got) > max)
            *why = too_large;
    }
    close(fd);
    if (*why) {
        free(text);
        return NULL;
    }
    if (!text && !(text = malloc(1))) {
        *why = "out of memory";
        return NULL;
    }
    text[n] = '\0';
    *len = n;
    return text;
}

int cred_token_from_file(const char *path, char token[CRED_TOKEN_MAX + 1], const char **why)
{
    size_t len = 0;
    /* The token and a CR LF after it; a longer file is refused unread past that. */
    char *text = cred_read_file(path, CRED_TOKEN_MAX + 2, &len, why);
    if (!text) {
        if (*why != too_large)
            return CRED_EREAD;
        *why = token_too_long;
        return CRED_EINVALID;
    }
    if (len && text[len - 1] == '\n') {
        text[--len] = '\0';
        if (len && text[len - 1] == '\r')
            text[--len] = '\0';
    }
    if (strlen(text) != len) {
        *why = "the token holds a NUL byte";
        free(text);
        return CRED_EINVALID;
    }
    *why = cred_token_problem(text);
    if (!*why)
        memcpy(token, text, len + 1);
    free(text);
    return *why ? CRED_EINVALID : 0;
}
