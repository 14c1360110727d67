/*
 * replay.c -- runs a fuzz target's LLVMFuzzerTestOneInput over files, without libFuzzer: the
 * same targets build with the project's compiler and flags (and its sanitizer builds), and
 * make check replays the committed corpus with them.
 *
 *   replay_target PATH ...   each PATH a file, or a directory whose files (not
 *                            subdirectories, not dot files) are run in name order
 *
 * Each input is read into a buffer of exactly its size, so that a sanitizer sees an
 * over-read. Exits 0 after all inputs ran (a crash or a broken invariant aborts), 2 when a
 * path cannot be read or no input was found.
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define HAVE_DEATH_CALLBACK 1
#endif

/* The input being run, named when it aborts (test driver state, not library state). */
static const char *current_path;

static void name_current(void)
{
    if (current_path) {
        static const char msg[] = "replay: the failing input is ";
        ssize_t ignored = write(2, msg, sizeof(msg) - 1);
        ignored = write(2, current_path, strlen(current_path));
        ignored = write(2, "\n", 1);
        (void)ignored;
    }
}

/* A broken invariant (abort) or a sanitizer's report (its death callback). */
static void on_abort(int sig)
{
    name_current();
    signal(sig, SIG_DFL);
    raise(sig);
}

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t cap = 4096, len = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fprintf(stderr, "%s: out of memory\n", path);
            fclose(f);
            return -1;
        }
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap)
            break;
        unsigned char *more = realloc(buf, cap *= 2);
        if (!more)
            free(buf);
        buf = more;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        perror(path);
        free(buf);
        return -1;
    }
    /* Exactly len bytes (at least one allocated byte for an empty input). */
    unsigned char *input = malloc(len ? len : 1);
    if (!input) {
        free(buf);
        return -1;
    }
    memcpy(input, buf, len);
    free(buf);
    current_path = path;
    LLVMFuzzerTestOneInput(input, len);
    current_path = NULL;
    free(input);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Runs every regular file of dir; returns the count, or -1. */
static long run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        return -1;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            char **more = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof(*names));
            if (!more)
                break;
            names = more;
        }
        size_t size = strlen(dir) + strlen(e->d_name) + 2;
        names[n] = malloc(size);
        if (!names[n])
            break;
        snprintf(names[n], size, "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof(*names), by_name);
    long count = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (count >= 0 && !stat(names[i], &st) && S_ISREG(st.st_mode))
            count = run_file(names[i]) ? -1 : count + 1;
        free(names[i]);
    }
    free(names);
    return count;
}

int main(int argc, char **argv)
{
    long total = 0;
    signal(SIGABRT, on_abort);
#ifdef HAVE_DEATH_CALLBACK
    __sanitizer_set_death_callback(name_current);
#endif
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st)) {
            perror(argv[i]);
            return 2;
        }
        long n = S_ISDIR(st.st_mode) ? run_dir(argv[i]) : run_file(argv[i]) ? -1 : 1;
        if (n < 0)
            return 2;
        total += n;
    }
    if (total == 0) {
        fprintf(stderr, "%s: no input to replay\n", argv[0]);
        return 2;
    }
    printf("%s: %ld inputs replayed, no failure\n", argv[0], total);
    return 0;
}
