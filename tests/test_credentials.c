/*
 * test_credentials.c -- the CLI's token checks and token file (cli/credentials.h): what may go
 * into "Authorization: Bearer", the line break a file may end with, the size bounds, pipes,
 * and that no message ever repeats the token.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../cli/credentials.h"

/* A token as `maskloss token new` prints it: 43 characters of base64url. */
#define MADE "Xq3_0-ZpL9sR2vW8yT1uK4mN7bC6dF5gH0jA2eI9oQw"

static char dir[] = "/tmp/test_credentials.XXXXXX";

static int make_dir(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    char cmd[64];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes len bytes of data to a file of the temporary folder: its path (static). */
static const char *file_of(const char *data, size_t len)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/token", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* A file holding s (its bytes up to the NUL) through cred_token_from_file. */
static int from_file(const char *s, char token[CRED_TOKEN_MAX + 1], const char **why)
{
    memset(token, '#', CRED_TOKEN_MAX + 1);
    *why = NULL;
    return cred_token_from_file(file_of(s, strlen(s)), token, why);
}

static void test_token_allowed(void **state)
{
    (void)state;
    assert_null(cred_token_problem(MADE));
    /* RFC 6750's b64token (base64 with padding) and any other visible ASCII character */
    assert_null(cred_token_problem("abc+/def=="));
    assert_null(cred_token_problem("x"));
    assert_null(cred_token_problem("!\"#$%&'()*,.:;<>?@[\\]^`{|}~"));
    char longest[CRED_TOKEN_MAX + 2];
    memset(longest, 'a', CRED_TOKEN_MAX);
    longest[CRED_TOKEN_MAX] = '\0';
    assert_null(cred_token_problem(longest));
    longest[CRED_TOKEN_MAX] = 'a';
    longest[CRED_TOKEN_MAX + 1] = '\0';
    assert_non_null(strstr(cred_token_problem(longest), "over 256 bytes"));
}

static void test_token_refused(void **state)
{
    (void)state;
    static const char *const breaking[] = {
        "SECRET token", "SECRET\ttoken", "SECRET\ntoken", "SECRET\r\nX-Admin: 1", "SECRET\r",
        " SECRET",      "SECRET ",       "SECRET\x7f",    "SECRET\x01",
    };
    for (size_t i = 0; i < sizeof(breaking) / sizeof(breaking[0]); i++) {
        const char *why = cred_token_problem(breaking[i]);
        assert_non_null(why);
        assert_non_null(strstr(why, "control character"));
        assert_null(strstr(why, "SECRET"));
    }
    assert_non_null(strstr(cred_token_problem("SECRET\xc3\xa9"), "outside printable ASCII"));
    assert_non_null(strstr(cred_token_problem(""), "empty"));
}

static void test_file_line_break(void **state)
{
    (void)state;
    char token[CRED_TOKEN_MAX + 1];
    const char *why;
    /* as echo, printf %s, a Windows editor leave it */
    static const char *const kept[] = {MADE "\n", MADE, MADE "\r\n"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(from_file(kept[i], token, &why), 0);
        assert_string_equal(token, MADE);
        assert_null(why);
    }
    /* One line break, no more: anything else in the file is not a token's. */
    static const char *const refused[] = {
        MADE "\n\n", MADE "\r", "\n" MADE, MADE " \n", MADE "\nsecond line\n", " " MADE "\n"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        assert_int_equal(from_file(refused[i], token, &why), CRED_EINVALID);
        assert_non_null(strstr(why, "control character"));
        assert_null(strstr(why, MADE));
    }
    assert_int_equal(from_file("", token, &why), CRED_EINVALID);
    assert_non_null(strstr(why, "empty"));
    assert_int_equal(from_file("\n", token, &why), CRED_EINVALID);
    assert_non_null(strstr(why, "empty"));
    assert_int_equal(cred_token_from_file(file_of("ab\0cd\n", 6), token, &why), CRED_EINVALID);
    assert_non_null(strstr(why, "NUL"));
}

static void test_file_sizes(void **state)
{
    (void)state;
    char token[CRED_TOKEN_MAX + 1];
    const char *why;
    char text[CRED_TOKEN_MAX + 3];
    memset(text, 'k', CRED_TOKEN_MAX);
    memcpy(text + CRED_TOKEN_MAX, "\r\n", 3); /* the longest file taken: 258 bytes */
    assert_int_equal(cred_token_from_file(file_of(text, CRED_TOKEN_MAX + 2), token, &why), 0);
    assert_int_equal(strlen(token), CRED_TOKEN_MAX);
    /* one byte more, in the token or after it */
    text[CRED_TOKEN_MAX] = 'k';
    assert_int_equal(cred_token_from_file(file_of(text, CRED_TOKEN_MAX + 1), token, &why),
                     CRED_EINVALID);
    assert_non_null(strstr(why, "over 256 bytes"));
    assert_int_equal(cred_token_from_file(file_of(text, CRED_TOKEN_MAX + 3), token, &why),
                     CRED_EINVALID);
    assert_non_null(strstr(why, "over 256 bytes"));
    /* a large file is refused, not read whole */
    size_t big = 1 << 20;
    char *junk = malloc(big);
    assert_non_null(junk);
    memset(junk, 'j', big);
    assert_int_equal(cred_token_from_file(file_of(junk, big), token, &why), CRED_EINVALID);
    free(junk);
}

static void test_file_unreadable(void **state)
{
    (void)state;
    char token[CRED_TOKEN_MAX + 1];
    const char *why;
    char path[128];
    snprintf(path, sizeof(path), "%s/absent", dir);
    assert_int_equal(cred_token_from_file(path, token, &why), CRED_EREAD);
    assert_string_equal(why, strerror(ENOENT));
    assert_int_equal(cred_token_from_file(dir, token, &why), CRED_EREAD);
    assert_non_null(strstr(why, "directory"));
}

/* `--token-file <(command)`: a pipe, its size unknown until it ends. */
static void test_file_pipe(void **state)
{
    (void)state;
    char token[CRED_TOKEN_MAX + 1], path[64];
    const char *why;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], MADE "\n", sizeof(MADE)), (ssize_t)sizeof(MADE));
    close(fds[1]);
    snprintf(path, sizeof(path), "/dev/fd/%d", fds[0]);
    assert_int_equal(cred_token_from_file(path, token, &why), 0);
    assert_string_equal(token, MADE);
    close(fds[0]);
    /* a pipe that holds too much: refused after max + 1 bytes */
    assert_int_equal(pipe(fds), 0);
    char junk[1024];
    memset(junk, 'j', sizeof(junk));
    assert_int_equal(write(fds[1], junk, sizeof(junk)), (ssize_t)sizeof(junk));
    close(fds[1]);
    snprintf(path, sizeof(path), "/dev/fd/%d", fds[0]);
    assert_int_equal(cred_token_from_file(path, token, &why), CRED_EINVALID);
    assert_non_null(strstr(why, "over 256 bytes"));
    close(fds[0]);
}

/* cred_read_file's bound, for the CA file: max bytes are read, max + 1 refused. */
static void test_read_file_bound(void **state)
{
    (void)state;
    char data[10000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)('a' + i % 26);
    const char *path = file_of(data, sizeof(data));
    size_t len = 0;
    const char *why = NULL;
    char *text = cred_read_file(path, sizeof(data), &len, &why);
    assert_non_null(text);
    assert_int_equal(len, sizeof(data));
    assert_memory_equal(text, data, sizeof(data));
    assert_int_equal(text[len], '\0');
    free(text);
    assert_null(cred_read_file(path, sizeof(data) - 1, &len, &why));
    assert_non_null(strstr(why, "larger"));
    text = cred_read_file(file_of("", 0), 100, &len, &why);
    assert_non_null(text);
    assert_int_equal(len, 0);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_allowed),   cmocka_unit_test(test_token_refused),
        cmocka_unit_test(test_file_line_break), cmocka_unit_test(test_file_sizes),
        cmocka_unit_test(test_file_unreadable), cmocka_unit_test(test_file_pipe),
        cmocka_unit_test(test_read_file_bound),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
