/*
 * monitor.c -- `maskloss monitor`: the monitors of a running maskloss-server (/v1/monitors).
 *
 * A thin client: requests are checked by the server, which answers with the project's error
 * object; this side only builds the request, reports what cannot reach the server, and maps the
 * outcome to an exit status that a script can tell apart (see monitor_usage).
 */
#include "monitor.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "credentials.h"
#include "http_client.h"
#include "tls.h"

#define EXIT_LOCAL 1   /* a local failure: a file, memory, standard output */
#define EXIT_HTTP 2    /* the server answered with an error (like a rejected `maskloss eval`) */
#define EXIT_CONNECT 3 /* no answer (cannot resolve, connect, send or read; not HTTP; TLS) */
#define EXIT_USAGE 64

#define DEFAULT_SERVER "http://127.0.0.1:8080"
#define DEFAULT_TIMEOUT_S 30
/* A request file: far above the server's default body limit (64 MiB), below anything that
 * would take the machine down. */
#define MAX_INPUT_BYTES ((size_t)1 << 30)

static const char monitor_usage[] =
    "usage: maskloss monitor create NAME --config FILE|- [--force]\n"
    "       maskloss monitor observe NAME [--time T] [--slice KEY=VALUE]... [--id ID] [FILE|-]\n"
    "       maskloss monitor show NAME\n"
    "       maskloss monitor series NAME [--step D] [--from T] [--to T] [--slice KEY=VALUE]...\n"
    "                               [--class C]\n"
    "       maskloss monitor list\n"
    "       maskloss monitor delete NAME\n"
    "  every command also takes [--server URL] [--timeout SECONDS]\n"
    "                           [--token TOKEN | --token-file PATH] [--cacert FILE]\n"
    "\n"
    "The monitors of a running maskloss-server: a loss tracked over time, per slice, with\n"
    "drift (the server's README, \"Monitors\").\n"
    "\n"
    "  create    PUT /v1/monitors/NAME with the JSON config of FILE (- for standard input);\n"
    "            --force replaces a different config and clears the monitor's data.\n"
    "  observe   POST /v1/monitors/NAME/observe: FILE (or standard input) holds the tensors of\n"
    "            a /v1/loss request (labels, logits or predictions or losses, weights or mask);\n"
    "            --time (Unix seconds or RFC 3339; default: the server's clock), --slice (one\n"
    "            per slice key of the config) and --id (an idempotency key) are added to it,\n"
    "            replacing the same keys of the file.\n"
    "  show      GET /v1/monitors/NAME: totals, windows, slices and drift.\n"
    "  series    GET /v1/monitors/NAME/series: the loss per --step (a duration such as 5m;\n"
    "            default 1m) from --from to --to (Unix seconds or RFC 3339; default the last\n"
    "            24 h), for the observations of every --slice given, or of one --class.\n"
    "  list      GET /v1/monitors: every monitor and its config.\n"
    "  delete    DELETE /v1/monitors/NAME, with its data.\n"
    "\n"
    "  --server URL      http://HOST[:PORT][/PREFIX] or https://... (default $MASKLOSS_SERVER,\n"
    "                    else " DEFAULT_SERVER "). https:// speaks TLS 1.2 or 1.3 and sends\n"
    "                    nothing before the server's certificate is verified, and found to be\n"
    "                    for HOST (a name, or an address the certificate lists).\n"
    "  --timeout SECONDS give up on a server silent this long (connect, TLS handshake, each\n"
    "                    read; default 30).\n"
    "  --token TOKEN     send 'Authorization: Bearer TOKEN' with every request, for a server\n"
    "                    started with --auth-file (default $MASKLOSS_TOKEN; the option wins).\n"
    "                    Printable ASCII without spaces, at most 256 bytes; never printed.\n"
    "  --token-file PATH the token read from PATH, alone on its line: out of the command line\n"
    "                    that ps shows (--token-file <(pass show maskloss) works too).\n"
    "  --cacert FILE     for https://, trust the PEM certificates of FILE (the CA that signed\n"
    "                    the server's certificate, or a self-signed one itself) instead of\n"
    "                    the system's trust store (default $MASKLOSS_CACERT).\n"
    "\n"
    "Output: the server's JSON answer on standard output, on one line for create and observe,\n"
    "indented for show, series and list; nothing for delete.\n"
    "Exit status: 0 the server answered 2xx; 1 a local failure (reading FILE, --token-file or\n"
    "--cacert, memory, writing the output); 2 the server answered an error (401 unauthorized:\n"
    "no token or not one of the server's; 403 forbidden: the token lacks the scope; 429 too\n"
    "many requests; ...): its error object {\"error\", \"code\", \"field\"} is printed on\n"
    "standard error; 3 the server could not be reached or its answer not read (\"cannot\n"
    "connect to 127.0.0.1:8080: Connection refused\"), or TLS failed (the handshake, a\n"
    "certificate not trusted, a host name mismatch); 64 a usage mistake, a token that cannot\n"
    "be sent included.\n";

/* ---- Options ----------------------------------------------------------------------------- */

enum {
    OPT_SERVER = 256,
    OPT_TIMEOUT,
    OPT_TOKEN,
    OPT_TOKEN_FILE,
    OPT_CACERT,
    OPT_CONFIG, /* from here on, the options of some commands only */
    OPT_FORCE,
    OPT_TIME,
    OPT_SLICE,
    OPT_ID,
    OPT_STEP,
    OPT_FROM,
    OPT_TO,
    OPT_CLASS,
};

static const struct option monitor_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"server", required_argument, NULL, OPT_SERVER},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"token", required_argument, NULL, OPT_TOKEN},
    {"token-file", required_argument, NULL, OPT_TOKEN_FILE},
    {"cacert", required_argument, NULL, OPT_CACERT},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"force", no_argument, NULL, OPT_FORCE},
    {"time", required_argument, NULL, OPT_TIME},
    {"slice", required_argument, NULL, OPT_SLICE},
    {"id", required_argument, NULL, OPT_ID},
    {"step", required_argument, NULL, OPT_STEP},
    {"from", required_argument, NULL, OPT_FROM},
    {"to", required_argument, NULL, OPT_TO},
    {"class", required_argument, NULL, OPT_CLASS},
    {NULL, 0, NULL, 0},
};

enum command { CMD_CREATE, CMD_OBSERVE, CMD_SHOW, CMD_SERIES, CMD_LIST, CMD_DELETE };

/* Each command: its name, whether it takes NAME, how many FILE operands, and the options of
 * its own (a bit per OPT_* - OPT_CONFIG). */
#define BIT(opt) (1u << ((opt)-OPT_CONFIG))
static const struct {
    const char *name;
    int takes_name;
    int max_files;
    unsigned options;
} commands[] = {
    [CMD_CREATE] = {"create", 1, 0, BIT(OPT_CONFIG) | BIT(OPT_FORCE)},
    [CMD_OBSERVE] = {"observe", 1, 1, BIT(OPT_TIME) | BIT(OPT_SLICE) | BIT(OPT_ID)},
    [CMD_SHOW] = {"show", 1, 0, 0},
    [CMD_SERIES] = {"series", 1, 0,
                    BIT(OPT_STEP) | BIT(OPT_FROM) | BIT(OPT_TO) | BIT(OPT_SLICE) | BIT(OPT_CLASS)},
    [CMD_LIST] = {"list", 0, 0, 0},
    [CMD_DELETE] = {"delete", 1, 0, 0},
};
#define NUM_COMMANDS (sizeof(commands) / sizeof(commands[0]))
#define MAX_SLICES 64

struct args {
    enum command cmd;
    const char *server, *config, *time, *id, *step, *from, *to, *class_;
    const char *token, *token_file, *cacert;
    int cacert_given; /* --cacert, not $MASKLOSS_CACERT (which is for https:// URLs only) */
    char token_read[CRED_TOKEN_MAX + 1]; /* the token of --token-file */
    const char *name, *file;
    const char *slices[MAX_SLICES];
    size_t num_slices;
    int force;
    int timeout_ms;
};

static int usage_error(const char *fmt, const char *arg)
{
    fputs("maskloss monitor: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs(" (see maskloss monitor --help)\n", stderr);
    return EXIT_USAGE;
}

static int parse_timeout(const char *v, int *ms)
{
    char *end = NULL;
    errno = 0;
    double s = strtod(v, &end);
    if (end == v || *end || errno || !(s > 0) || s > 86400)
        return -1;
    *ms = (int)(s * 1000 + 0.5);
    if (*ms < 1)
        *ms = 1;
    return 0;
}

/* a->token from --token, --token-file or $MASKLOSS_TOKEN, in that order, checked: 0, or an
 * exit status after a message that names where the token came from, never the token. */
static int resolve_token(struct args *a)
{
    const char *source = "--token", *problem;
    if (a->token && a->token_file)
        return usage_error("give --token or --token-file, not %s", "both");
    if (a->token_file) {
        int rc = cred_token_from_file(a->token_file, a->token_read, &problem);
        if (rc == CRED_EREAD) {
            fprintf(stderr, "maskloss monitor: --token-file %s: cannot read it: %s\n",
                    a->token_file, problem);
            return EXIT_LOCAL;
        }
        if (rc) {
            fprintf(stderr, "maskloss monitor: --token-file %s: %s\n", a->token_file, problem);
            return EXIT_USAGE;
        }
        a->token = a->token_read;
        return 0;
    }
    if (!a->token) {
        const char *env = getenv("MASKLOSS_TOKEN");
        a->token = env && *env ? env : NULL;
        source = "$MASKLOSS_TOKEN";
    }
    if (a->token && (problem = cred_token_problem(a->token))) {
        fprintf(stderr, "maskloss monitor: %s: %s\n", source, problem);
        return EXIT_USAGE;
    }
    return 0;
}

/* Parses argv (argv[0] is the command's name) into *a: 0, or an exit status. */
static int parse_args(int argc, char **argv, struct args *a)
{
    memset(a, 0, sizeof(*a));
    a->timeout_ms = DEFAULT_TIMEOUT_S * 1000;
    size_t k;
    for (k = 0; k < NUM_COMMANDS; k++)
        if (!strcmp(argv[0], commands[k].name))
            break;
    if (k == NUM_COMMANDS)
        return usage_error("unknown command '%s'", argv[0]);
    a->cmd = (enum command)k;
    int ch, index;
    optind = 0; /* a full reset of getopt's state (main() scanned its own options) */
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":h", monitor_options, &index)) != -1) {
        if (ch >= OPT_CONFIG && !(commands[a->cmd].options & BIT(ch))) {
            fprintf(stderr,
                    "maskloss monitor %s: --%s does not apply (see maskloss monitor "
                    "--help)\n",
                    commands[a->cmd].name, monitor_options[index].name);
            return EXIT_USAGE;
        }
        switch (ch) {
        case 'h':
            fputs(monitor_usage, stdout);
            return -1; /* done, exit 0 */
        case OPT_SERVER:
            a->server = optarg;
            break;
        case OPT_TIMEOUT:
            if (parse_timeout(optarg, &a->timeout_ms))
                return usage_error("--timeout takes seconds (0 < S <= 86400), not '%s'", optarg);
            break;
        case OPT_TOKEN:
            a->token = optarg;
            break;
        case OPT_TOKEN_FILE:
            a->token_file = optarg;
            break;
        case OPT_CACERT:
            a->cacert = optarg;
            a->cacert_given = 1;
            break;
        case OPT_CONFIG:
            a->config = optarg;
            break;
        case OPT_FORCE:
            a->force = 1;
            break;
        case OPT_TIME:
            a->time = optarg;
            break;
        case OPT_SLICE:
            if (!strchr(optarg, '=') || optarg[0] == '=')
                return usage_error("--slice takes KEY=VALUE, not '%s'", optarg);
            if (a->num_slices == MAX_SLICES)
                return usage_error("more than %s --slice options", "64");
            a->slices[a->num_slices++] = optarg;
            break;
        case OPT_ID:
            a->id = optarg;
            break;
        case OPT_STEP:
            a->step = optarg;
            break;
        case OPT_FROM:
            a->from = optarg;
            break;
        case OPT_TO:
            a->to = optarg;
            break;
        case OPT_CLASS:
            a->class_ = optarg;
            break;
        case ':':
            return usage_error("%s needs a value", argv[optind - 1]);
        default:
            if (optopt && optopt < 256) {
                char opt[3] = {'-', (char)optopt, '\0'};
                return usage_error("unknown option '%s'", opt);
            }
            return usage_error("unknown or ambiguous option '%s'", argv[optind - 1]);
        }
    }
    int left = argc - optind;
    if (commands[a->cmd].takes_name) {
        if (left == 0)
            return usage_error("%s needs the monitor's NAME", commands[a->cmd].name);
        a->name = argv[optind++];
        left--;
    }
    if (left > commands[a->cmd].max_files)
        return usage_error("unexpected argument '%s'", argv[optind + commands[a->cmd].max_files]);
    if (left)
        a->file = argv[optind];
    if (a->cmd == CMD_CREATE && !a->config)
        return usage_error("%s needs --config FILE (- for standard input)", "create");
    if (!a->server) {
        const char *env = getenv("MASKLOSS_SERVER");
        a->server = env && *env ? env : DEFAULT_SERVER;
    }
    if (!a->cacert) {
        const char *env = getenv("MASKLOSS_CACERT");
        a->cacert = env && *env ? env : NULL;
    }
    return resolve_token(a);
}

/* ---- Helpers ------------------------------------------------------------------------------ */

/* Reads path (or standard input for "-" or NULL) whole, NUL-terminated: the text (free it), or
 * NULL after a message. */
static char *read_input(const char *path, size_t *len)
{
    FILE *f = stdin;
    const char *name = "standard input";
    if (path && strcmp(path, "-")) {
        f = fopen(path, "rb");
        if (!f) {
            fprintf(stderr, "maskloss monitor: cannot open %s: %s\n", path, strerror(errno));
            return NULL;
        }
        name = path;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    int failed = !buf;
    while (!failed) {
        if (n + 1 == cap) {
            if (cap > MAX_INPUT_BYTES) {
                fprintf(stderr, "maskloss monitor: %s is over %zu bytes\n", name, MAX_INPUT_BYTES);
                failed = 2;
                break;
            }
            char *p = realloc(buf, cap * 2);
            if (!p) {
                failed = 1;
                break;
            }
            buf = p;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (!failed && ferror(f)) {
        fprintf(stderr, "maskloss monitor: cannot read %s: %s\n", name, strerror(errno));
        failed = 2;
    }
    if (failed == 1)
        fprintf(stderr, "maskloss monitor: out of memory reading %s\n", name);
    if (f != stdin)
        fclose(f);
    if (failed) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* Appends s percent-encoded (every byte but RFC 3986's unreserved ones) to out (cap bytes):
 * 0, or -1 when it does not fit. */
static int append_escaped(char *out, size_t cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(out);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        int plain = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~';
        if (n + (plain ? 1 : 3) >= cap)
            return -1;
        if (plain) {
            out[n++] = (char)ch;
        } else {
            out[n++] = '%';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        }
    }
    out[n] = '\0';
    return 0;
}

static int append(char *out, size_t cap, const char *s)
{
    size_t n = strlen(out), m = strlen(s);
    if (n + m >= cap)
        return -1;
    memcpy(out + n, s, m + 1);
    return 0;
}

/* `&key=value` (or `?key=value` first) with value percent-encoded. */
static int append_query(char *out, size_t cap, const char *key, const char *value)
{
    return append(out, cap, strchr(out, '?') ? "&" : "?") || append(out, cap, key) ||
           append(out, cap, "=") || append_escaped(out, cap, value);
}

/* Writes JSON text indented by two spaces per level, token by token: numbers and strings are
 * copied as the server wrote them (a parse and dump would respell 0.1 as 0.10000000000000001). */
static int write_indented(FILE *out, const char *s, size_t n)
{
    int depth = 0, in_string = 0, escaped = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (in_string) {
            fputc(ch, out);
            if (escaped)
                escaped = 0;
            else if (ch == '\\')
                escaped = 1;
            else if (ch == '"')
                in_string = 0;
            continue;
        }
        switch (ch) {
        case ' ':
        case '\t':
        case '\n':
        case '\r':
            break;
        case '"':
            in_string = 1;
            fputc(ch, out);
            break;
        case '{':
        case '[': {
            size_t j = i + 1;
            while (j < n && strchr(" \t\r\n", s[j]))
                j++;
            fputc(ch, out);
            if (j < n && (s[j] == '}' || s[j] == ']')) { /* {} and [] stay on the line */
                fputc(s[j], out);
                i = j;
                break;
            }
            depth++;
            fprintf(out, "\n%*s", 2 * depth, "");
            break;
        }
        case '}':
        case ']':
            depth = depth ? depth - 1 : 0;
            fprintf(out, "\n%*s%c", 2 * depth, "", ch);
            break;
        case ',':
            fprintf(out, ",\n%*s", 2 * depth, "");
            break;
        case ':':
            fputs(": ", out);
            break;
        default:
            fputc(ch, out);
        }
    }
    fputc('\n', out);
    return 0;
}

static int is_json(const struct http_response *r)
{
    return !strncmp(r->content_type, "application/json", 16);
}

/* Writes len bytes of s to f with every copy of token (NULL: none) written as "<token>": an
 * error page may quote the request's headers back (a proxy's, a debugging server's), and what
 * this command prints ends up in terminals and CI logs. */
static void write_redacted(FILE *f, const char *s, size_t len, const char *token)
{
    size_t tlen = token ? strlen(token) : 0;
    size_t i = 0;
    while (i < len) {
        if (tlen && len - i >= tlen && !memcmp(s + i, token, tlen)) {
            fputs("<token>", f);
            i += tlen;
        } else {
            fputc(s[i++], f);
        }
    }
}

/* An error answer on standard error: the server's error object as it came, else (a proxy's
 * page?) the status and a bounded part of the body; then what the command can add. */
static void report_error(const struct http_response *r, const char *token)
{
    if (is_json(r) && r->body_len) {
        write_redacted(stderr, r->body, r->body_len, token);
        fputc('\n', stderr);
    } else {
        size_t shown = r->body_len > 1024 ? 1024 : r->body_len;
        fprintf(stderr, "maskloss monitor: HTTP %d%s", r->status, shown ? ": " : "");
        write_redacted(stderr, r->body, shown, token);
        fputc('\n', stderr);
    }
    if (r->status == 401 && !token)
        fputs("maskloss monitor: the server needs a token: --token, --token-file or "
              "$MASKLOSS_TOKEN\n",
              stderr);
    if (r->retry_after[0]) /* 429 too_many_requests, 503 */
        fprintf(stderr, "maskloss monitor: the server asks to retry after %s%s\n", r->retry_after,
                strspn(r->retry_after, "0123456789") == strlen(r->retry_after) ? " s" : "");
}

/* Prints an answer: a 2xx on standard output (indented or as it came), an error on standard
 * error. Returns the exit status. */
static int report(const struct http_response *r, int indented, const char *token)
{
    if (r->status < 200 || r->status > 299) {
        report_error(r, token);
        return EXIT_HTTP;
    }
    if (r->body_len) {
        if (indented && is_json(r))
            write_indented(stdout, r->body, r->body_len);
        else if (fwrite(r->body, 1, r->body_len, stdout) != r->body_len ||
                 (r->body[r->body_len - 1] != '\n' && fputc('\n', stdout) == EOF))
            goto write_failed;
    }
    if (fflush(stdout) == 0 && !ferror(stdout))
        return 0;
write_failed:
    fprintf(stderr, "maskloss monitor: cannot write to standard output: %s\n", strerror(errno));
    return EXIT_LOCAL;
}

static int exchange(const struct http_client *cl, const struct http_url *u, const char *method,
                    const char *target, const char *body, size_t body_len, int indented)
{
    struct http_response r;
    char why[512];
    int rc = http_request(cl, u, method, target, body ? "application/json" : NULL, body, body_len,
                          &r, why, sizeof(why));
    if (rc) {
        fprintf(stderr, "maskloss monitor: %s\n", why);
        return rc == HTTP_ENOMEM ? EXIT_LOCAL : EXIT_CONNECT;
    }
    int status = report(&r, indented, cl->token);
    http_response_free(&r);
    return status;
}

/* The observation: the request of FILE with --time, --slice and --id set. The text to send
 * (free it), or NULL after a message with *status set. */
static char *observation(const struct args *a, size_t *len, int *status)
{
    size_t in_len = 0;
    char *text = read_input(a->file, &in_len);
    *status = EXIT_LOCAL;
    if (!text)
        return NULL;
    if (!a->time && !a->num_slices && !a->id) {
        *len = in_len; /* nothing to add: the file goes as it is, checked by the server */
        return text;
    }
    json_error_t je;
    /* Numbers as written: integers stay integers; a real is dumped with 17 digits, which
     * reads back as the same double. */
    json_t *root = json_loadb(text, in_len, JSON_REJECT_DUPLICATES, &je);
    const char *name = a->file && strcmp(a->file, "-") ? a->file : "standard input";
    free(text);
    if (!root) {
        fprintf(stderr, "maskloss monitor: %s: line %d, column %d: %s\n", name, je.line, je.column,
                je.text);
        return NULL;
    }
    char *out = NULL;
    if (!json_is_object(root)) {
        fprintf(stderr, "maskloss monitor: %s: the request must be a JSON object\n", name);
        goto done;
    }
    if (a->time) {
        /* A number is Unix seconds; anything else goes as a string (RFC 3339, or for the
         * server to refuse: "nan" is no time). */
        char *end = NULL;
        errno = 0;
        double t = strtod(a->time, &end);
        int is_number = end != a->time && !*end && !errno && isfinite(t);
        json_t *v = is_number ? json_real(t) : json_string(a->time);
        if (!v || json_object_set_new(root, "time", v))
            goto oom;
    }
    if (a->num_slices) {
        json_t *slice = json_object();
        if (!slice || json_object_set_new(root, "slice", slice))
            goto oom;
        for (size_t i = 0; i < a->num_slices; i++) {
            const char *eq = strchr(a->slices[i], '=');
            char key[256];
            size_t klen = (size_t)(eq - a->slices[i]);
            if (klen >= sizeof(key)) {
                fprintf(stderr, "maskloss monitor: --slice %.40s...: the key is too long\n",
                        a->slices[i]);
                *status = EXIT_USAGE;
                goto done;
            }
            memcpy(key, a->slices[i], klen);
            key[klen] = '\0';
            if (json_object_get(slice, key)) {
                fprintf(stderr, "maskloss monitor: --slice %s given twice\n", key);
                *status = EXIT_USAGE;
                goto done;
            }
            json_t *v = json_string(eq + 1);
            if (!v) {
                fprintf(stderr, "maskloss monitor: --slice %s: the value is not UTF-8\n", key);
                *status = EXIT_USAGE;
                goto done;
            }
            if (json_object_set_new(slice, key, v))
                goto oom;
        }
    }
    if (a->id) {
        json_t *v = json_string(a->id);
        if (!v) {
            fprintf(stderr, "maskloss monitor: --id: not UTF-8\n");
            *status = EXIT_USAGE;
            goto done;
        }
        if (json_object_set_new(root, "id", v))
            goto oom;
    }
    out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    if (!out)
        goto oom;
    *len = strlen(out);
    *status = 0;
    goto done;
oom:
    fprintf(stderr, "maskloss monitor: out of memory building the request\n");
done:
    json_decref(root);
    return out;
}

/* The trust of an https:// URL: --cacert's certificates, else the system's store. 0 with *t
 * set, or an exit status after a message. */
static int load_trust(const struct args *a, struct tls_trust **t)
{
    char why[512];
    const char *problem = NULL;
    size_t len = 0;
    char *pem = NULL;
    if (a->cacert && !(pem = cred_read_file(a->cacert, CRED_CAFILE_MAX, &len, &problem))) {
        fprintf(stderr, "maskloss monitor: --cacert %s: cannot read it: %s\n", a->cacert, problem);
        return EXIT_LOCAL;
    }
    int rc = tls_trust_new(t, pem, len, why, sizeof(why));
    free(pem);
    if (rc) {
        fprintf(stderr, "maskloss monitor: %s%s: %s\n", a->cacert ? "--cacert " : "",
                a->cacert ? a->cacert : "the system's trust store", why);
        return EXIT_LOCAL;
    }
    return 0;
}

/* ---- The command ---------------------------------------------------------------------------- */

/* The command of a, its request sent with cl to u: the exit status. */
static int run(const struct args *a, const struct http_client *cl, const struct http_url *u)
{
    int status;
    char target[4096] = "/v1/monitors";
    if (a->name &&
        (append(target, sizeof(target), "/") || append_escaped(target, sizeof(target), a->name)))
        return usage_error("the monitor's name is too long: '%.60s...'", a->name);
    switch (a->cmd) {
    case CMD_CREATE: {
        size_t len = 0;
        char *config = read_input(a->config, &len);
        if (!config)
            return EXIT_LOCAL;
        if (a->force)
            append(target, sizeof(target), "?force=true");
        status = exchange(cl, u, "PUT", target, config, len, 0);
        free(config);
        return status;
    }
    case CMD_OBSERVE: {
        size_t len = 0;
        char *body = observation(a, &len, &status);
        if (!body)
            return status;
        append(target, sizeof(target), "/observe");
        status = exchange(cl, u, "POST", target, body, len, 0);
        free(body);
        return status;
    }
    case CMD_SERIES: {
        int too_long = append(target, sizeof(target), "/series");
        if (a->step)
            too_long |= append_query(target, sizeof(target), "step", a->step);
        if (a->from)
            too_long |= append_query(target, sizeof(target), "from", a->from);
        if (a->to)
            too_long |= append_query(target, sizeof(target), "to", a->to);
        for (size_t i = 0; i < a->num_slices; i++)
            too_long |= append_query(target, sizeof(target), "slice", a->slices[i]);
        if (a->class_)
            too_long |= append_query(target, sizeof(target), "class", a->class_);
        if (too_long)
            return usage_error("the query is over %s bytes", "4 KiB");
        return exchange(cl, u, "GET", target, NULL, 0, 1);
    }
    case CMD_SHOW:
    case CMD_LIST:
        return exchange(cl, u, "GET", target, NULL, 0, 1);
    case CMD_DELETE:
        return exchange(cl, u, "DELETE", target, NULL, 0, 0);
    }
    return EXIT_USAGE;
}

int maskloss_monitor(int argc, char **argv)
{
    if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h") ||
        !strcmp(argv[0], "help")) {
        fputs(monitor_usage, argc < 1 ? stderr : stdout);
        return argc < 1 ? EXIT_USAGE : 0;
    }
    struct args a;
    int status = parse_args(argc, argv, &a);
    if (status)
        return status < 0 ? 0 : status;
    struct http_url u;
    char why[512];
    if (http_url_parse(a.server, &u, why, sizeof(why))) {
        fprintf(stderr, "maskloss monitor: --server %s\n", why);
        return EXIT_USAGE;
    }
    if (!u.tls && a.cacert_given)
        return usage_error("--cacert is for https:// URLs; --server %s is http://", a.server);
    struct http_client cl = {.timeout_ms = a.timeout_ms, .token = a.token};
    struct tls_trust *trust = NULL;
    if (u.tls && (status = load_trust(&a, &trust)))
        return status;
    cl.trust = trust;
    status = run(&a, &cl, &u);
    tls_trust_free(trust);
    return status;
}
