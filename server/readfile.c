/*
 * readfile.c -- the whole of a small file an operator names (readfile.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "readfile.h"

char *mls_read_file(const char *path, size_t max, size_t *len, const char **why)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        *why = strerror(errno);
        return NULL;
    }
    struct stat st;
    FILE *f = NULL;
    char *text = NULL;
    *why = NULL;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (size_t)st.st_size > max ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) || !(f = fdopen(fd, "rb")))
        *why = "not a regular file of at most the size allowed";
    else if (!(text = malloc((size_t)st.st_size + 2)))
        *why = "out of memory";
    /* (one byte more than the file asked for: a file that grew while read is refused) */
    else if ((*len = fread(text, 1, (size_t)st.st_size + 1, f)) != (size_t)st.st_size || ferror(f))
        *why = "it changed while being read";
    if (f)
        fclose(f);
    else
        close(fd);
    if (*why) {
        free(text);
        return NULL;
    }
    text[*len] = 0;
    return text;
}
