/*
 * readfile.h -- the whole of a small file an operator names (--auth-file, --tls-cert,
 * --tls-key), read at start or at a SIGHUP.
 */
#ifndef MLS_READFILE_H
#define MLS_READFILE_H

#include <stddef.h>

/*
 * The whole of the regular file at path, of at most max bytes, NUL-terminated (*len: its
 * bytes, without the NUL): a malloc'd buffer, or NULL with *why saying what is wrong (a
 * static string). The file is opened without blocking and looked at before it is read, so
 * that a FIFO or a device is refused, never waited on (at a SIGHUP the wait would be the
 * loop thread's).
 */
char *mls_read_file(const char *path, size_t max, size_t *len, const char **why);

#endif /* MLS_READFILE_H */
