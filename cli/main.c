/*
 * maskloss -- evaluate loss requests offline, from files or pipes.
 *
 *   maskloss eval [--jsonl] [--max-elements N] [FILE|-]
 *   maskloss losses
 *   maskloss --help | --version
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "maskloss.h"
#include "mlp.h"

#define EXIT_INVALID 2 /* the request was rejected: the error object is on stdout */
#define EXIT_USAGE 64

static const char usage[] =
    "usage: maskloss eval [--jsonl] [--max-elements N] [FILE|-]\n"
    "       maskloss losses\n"
    "       maskloss --help | --version\n"
    "\n"
    "Evaluates masked, weighted losses with the semantics of TensorFlow, Keras and PyTorch.\n"
    "\n"
    "  eval             read one JSON request from FILE (or standard input when FILE is - or\n"
    "                   absent) and print the response on standard output. A rejected request\n"
    "                   prints its error object {\"error\", \"code\", \"field\"} and exits 2.\n"
    "    --jsonl        one request per line, one response or error object per line;\n"
    "                   exits 2 when any line was rejected, after answering every line.\n"
    "    --max-elements N  reject tensors of more than N elements (default: no limit).\n"
    "  losses           print the catalogue: every loss with its parameters, defaults and\n"
    "                   reductions, as JSON.\n"
    "\n"
    "Example (the masked mean of sigmoid cross-entropy, TensorFlow's default reduction):\n"
    "  echo '{\"loss\": \"sigmoid_cross_entropy\", \"labels\": [[1,0]], \"logits\": [[0.2,0.8]],\n"
    "         \"weights\": [[1,0]], \"dtype\": \"float64\"}' | maskloss eval\n"
    "\n"
    "The request format is described in proto/README.md of the maskloss sources.\n";

static int write_out(const struct mlp_buf *b)
{
    if (b->failed) {
        fprintf(stderr, "maskloss: out of memory writing the response\n");
        return 1;
    }
    if (fwrite(b->data, 1, b->len, stdout) != b->len || fputc('\n', stdout) == EOF) {
        fprintf(stderr, "maskloss: cannot write to standard output: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        if (n == cap) {
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                return NULL;
            }
            buf = p;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static int eval_one(FILE *in, const char *name, long long max_elements)
{
    size_t len = 0;
    char *text = read_all(in, &len);
    if (!text) {
        fprintf(stderr, "maskloss: cannot read %s: %s\n", name, strerror(errno));
        return 1;
    }
    struct mlp_buf out = {0};
    int rc = mlp_eval_text(text, len, max_elements, &out);
    free(text);
    int wrc = write_out(&out);
    free(out.data);
    if (wrc)
        return wrc;
    return rc ? EXIT_INVALID : 0;
}

static int eval_lines(FILE *in, const char *name, long long max_elements)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int status = 0;
    errno = 0;
    while ((n = getline(&line, &cap, in)) != -1) {
        size_t len = (size_t)n;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        size_t start = 0;
        while (start < len && (line[start] == ' ' || line[start] == '\t'))
            start++;
        if (start == len)
            continue; /* blank lines separate nothing */
        struct mlp_buf out = {0};
        int rc = mlp_eval_text(line + start, len - start, max_elements, &out);
        int wrc = write_out(&out);
        free(out.data);
        if (wrc) {
            free(line);
            return wrc;
        }
        if (rc)
            status = EXIT_INVALID;
        fflush(stdout);
    }
    free(line);
    if (ferror(in)) {
        fprintf(stderr, "maskloss: cannot read %s: %s\n", name, strerror(errno));
        return 1;
    }
    return status;
}

static int cmd_eval(int argc, char **argv)
{
    int jsonl = 0;
    long long max_elements = 0;
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--jsonl")) {
            jsonl = 1;
        } else if (!strcmp(argv[i], "--max-elements")) {
            char *end = NULL;
            if (i + 1 == argc || (max_elements = strtoll(argv[i + 1], &end, 10)) < 0 || *end) {
                fprintf(stderr, "maskloss: --max-elements takes a non-negative integer\n");
                return EXIT_USAGE;
            }
            i++;
        } else if (!strcmp(argv[i], "-") || argv[i][0] != '-') {
            if (path) {
                fprintf(stderr, "maskloss: eval takes one FILE\n%s", usage);
                return EXIT_USAGE;
            }
            path = argv[i];
        } else {
            fprintf(stderr, "maskloss: unknown option '%s'\n%s", argv[i], usage);
            return EXIT_USAGE;
        }
    }
    FILE *in = stdin;
    const char *name = "standard input";
    if (path && strcmp(path, "-")) {
        in = fopen(path, "rb");
        if (!in) {
            fprintf(stderr, "maskloss: cannot open %s: %s\n", path, strerror(errno));
            return 1;
        }
        name = path;
    }
    int rc = jsonl ? eval_lines(in, name, max_elements) : eval_one(in, name, max_elements);
    if (in != stdin)
        fclose(in);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("maskloss %s\n", ML_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "eval"))
        return cmd_eval(argc - 2, argv + 2);
    if (!strcmp(argv[1], "losses")) {
        struct mlp_buf b = {0};
        mlp_catalogue_write(&b);
        int rc = write_out(&b);
        free(b.data);
        return rc;
    }
    fprintf(stderr, "maskloss: unknown command '%s'\n%s", argv[1], usage);
    return EXIT_USAGE;
}
