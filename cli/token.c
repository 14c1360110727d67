/*
 * token.c -- `maskloss token new NAME --scopes S[,S...] [--auth-file PATH]`.
 *
 * Makes a token of 256 random bits from the operating system (getrandom), prints it once on
 * standard output, and appends its line -- the SHA-256, never the token -- to the auth file
 * (mlp_auth.h), created with mode 0600 when absent. The server reads the file again on SIGHUP.
 */
/* flock (BSD) is declared for _DEFAULT_SOURCE only. */
#define _DEFAULT_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mlp_auth.h"
#include "token.h"

#define EXIT_USAGE 64

static const char token_usage[] =
    "usage: maskloss token new NAME --scopes SCOPE[,SCOPE...] [--auth-file PATH]\n"
    "\n"
    "Makes a bearer token for maskloss-server --auth-file: 256 random bits from the operating\n"
    "system, printed once on standard output (keep it: the file holds only its SHA-256), and\n"
    "appends its line '<sha-256> NAME SCOPES' to the auth file (created, mode 0600, when\n"
    "absent). Send SIGHUP to the server to read the file again.\n"
    "\n"
    "  NAME             1 to 64 of A-Z a-z 0-9 . _ - @ : (shown in logs and metrics), not\n"
    "                   already in the file\n"
    "  --scopes S,...   evaluate (POST /v1/loss, /v1/batch, v2 infer), monitor:read,\n"
    "                   monitor:write (create, observe, predictions, labels), admin (delete\n"
    "                   monitors; and everything), metrics (GET /metrics)\n"
    "  --auth-file PATH the file (default: $MASKLOSS_AUTH_FILE)\n";

enum { OPT_SCOPES = 256, OPT_AUTH_FILE };

static const struct option token_options[] = {
    {"scopes", required_argument, NULL, OPT_SCOPES},
    {"auth-file", required_argument, NULL, OPT_AUTH_FILE},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* base64url without padding (RFC 4648 section 5): a token that goes into a header as is. */
static void base64url(const unsigned char *in, size_t n, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    unsigned v = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        v = v << 8 | in[i];
        bits += 8;
        while (bits >= 6) {
            out[o++] = abc[(v >> (bits - 6)) & 63];
            bits -= 6;
        }
    }
    if (bits)
        out[o++] = abc[(v << (6 - bits)) & 63];
    out[o] = 0;
}

/* Whether the file (fd, locked) already has a line of that name: 1, 0, or -1 (unreadable,
 * or a line that is not valid: the file is not appended to then), after saying why. */
static int has_name(int fd, const char *path, const char *name)
{
    int rfd = dup(fd);
    FILE *f = rfd < 0 ? NULL : fdopen(rfd, "r");
    if (!f) {
        if (rfd >= 0)
            close(rfd);
        fprintf(stderr, "maskloss token new: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    rewind(f);
    char line[1024];
    int found = 0, lineno = 0;
    while (!found && fgets(line, sizeof(line), f)) {
        lineno++;
        size_t n = strcspn(line, "\n");
        struct mlp_token t;
        char err[256];
        int r = mlp_token_line_parse(line, n, &t, err, sizeof(err));
        if (r < 0) {
            fprintf(stderr, "maskloss token new: %s, line %d: %s; nothing was added\n", path,
                    lineno, err);
            found = -1;
        } else if (r > 0 && !strcmp(t.name, name)) {
            fprintf(stderr, "maskloss token new: %s already has a token named %s\n", path, name);
            found = 1;
        }
    }
    fclose(f);
    return found;
}

int maskloss_token(int argc, char **argv)
{
    const char *scopes = NULL, *path = getenv("MASKLOSS_AUTH_FILE");
    int ch;
    optind = 0; /* a full reset of getopt's state (main() scanned its own options) */
    opterr = 0;
    if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
        fputs(token_usage, argc < 1 ? stderr : stdout);
        return argc < 1 ? EXIT_USAGE : 0;
    }
    if (strcmp(argv[0], "new")) {
        fprintf(stderr, "maskloss token: unknown command '%s'\n%s", argv[0], token_usage);
        return EXIT_USAGE;
    }
    while ((ch = getopt_long(argc, argv, ":h", token_options, NULL)) != -1) {
        switch (ch) {
        case 'h':
            fputs(token_usage, stdout);
            return 0;
        case OPT_SCOPES:
            scopes = optarg;
            break;
        case OPT_AUTH_FILE:
            path = optarg;
            break;
        default:
            fprintf(stderr, "maskloss token: %s '%s'\n%s",
                    ch == ':' ? "a value is missing after" : "unknown option", argv[optind - 1],
                    token_usage);
            return EXIT_USAGE;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "maskloss token new: one NAME, after the options or among them\n%s",
                token_usage);
        return EXIT_USAGE;
    }
    const char *name = argv[optind];
    unsigned bits;
    char err[256];
    if (!mlp_token_name_ok(name)) {
        fprintf(stderr,
                "maskloss token new: name '%.80s': 1 to %d of A-Z a-z 0-9 . _ - @ : (it goes "
                "into logs and metrics)\n",
                name, MLP_TOKEN_NAME_MAX);
        return EXIT_USAGE;
    }
    if (!scopes) {
        fprintf(stderr, "maskloss token new: --scopes is needed\n%s", token_usage);
        return EXIT_USAGE;
    }
    if (mlp_scopes_parse(scopes, strlen(scopes), &bits, err, sizeof(err))) {
        fprintf(stderr, "maskloss token new: --scopes: %s\n", err);
        return EXIT_USAGE;
    }
    if (!path || !*path) {
        fprintf(stderr, "maskloss token new: --auth-file PATH (or MASKLOSS_AUTH_FILE) is needed: "
                        "the file the server reads\n");
        return EXIT_USAGE;
    }
    /* Opened, then locked for the check and the append together: two `token new` at once
     * cannot both add the same name. */
    int fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || flock(fd, LOCK_EX)) {
        fprintf(stderr, "maskloss token new: cannot open %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 1;
    }
    if (has_name(fd, path, name)) {
        close(fd);
        return 1;
    }
    unsigned char raw[32];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        fprintf(stderr, "maskloss token new: no random bytes from the system: %s\n",
                strerror(errno));
        close(fd);
        return 1;
    }
    char token[48], line[MLP_TOKEN_NAME_MAX + 200];
    base64url(raw, sizeof(raw), token);
    int len = mlp_token_line_format(token, name, bits, line, sizeof(line));
    /* A file whose last line lacks its newline gets one first. */
    struct stat st;
    int ok = len > 0 && fstat(fd, &st) == 0;
    if (ok && st.st_size > 0) {
        char last = '\n';
        ok = pread(fd, &last, 1, st.st_size - 1) == 1;
        if (ok && last != '\n')
            ok = write(fd, "\n", 1) == 1;
    }
    ok = ok && write(fd, line, (size_t)len) == len && fsync(fd) == 0;
    if (close(fd) || !ok) {
        fprintf(stderr, "maskloss token new: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    printf("%s\n", token);
    fprintf(stderr,
            "maskloss token new: token %s (%s) added to %s; send SIGHUP to a running "
            "server to read it\n",
            name, scopes, path);
    return 0;
}
