/*
 * maskloss -- evaluate loss requests offline, from files or pipes.
 *
 *   maskloss eval [--jsonl] [--max-elements N] [FILE|-]
 *   maskloss eval --loss NAME --labels Y.npy --logits X.npy ...
 *   maskloss losses
 *   maskloss bench [--json] [--quick]
 *   maskloss monitor create|observe|show|series|list|delete ...   (monitor.c)
 *   maskloss --help | --version
 *
 * Options are parsed with getopt_long, in the style of maskloss-server's (server/config.c):
 * "+:h", our own messages, exit status 64 for a usage mistake.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "maskloss.h"
#include "mlp.h"
#include "monitor.h"
#include "npy.h"
#include "token.h"

#define EXIT_INVALID 2 /* the request was rejected: the error object is on stdout */
#define EXIT_USAGE 64

static const char usage[] =
    "usage: maskloss eval [--jsonl] [--max-elements N] [FILE|-]\n"
    "       maskloss eval --loss NAME --labels Y.npy --logits X.npy [--weights M.npy]\n"
    "                     [--reduction R] [--dtype float32|float64] [--param NAME=VALUE]...\n"
    "                     [--per-element OUT.npy] [--per-sample OUT.npy] [--per-class OUT.npy]\n"
    "       maskloss losses\n"
    "       maskloss bench [--json] [--quick]\n"
    "       maskloss monitor create|observe|show|series|list|delete ... [--server URL]\n"
    "                        [--token TOKEN | --token-file PATH] [--cacert FILE]\n"
    "       maskloss token new NAME --scopes S[,S...] [--auth-file PATH]\n"
    "       maskloss --help | --version\n"
    "\n"
    "Evaluates masked, weighted losses with the semantics of TensorFlow, Keras and PyTorch.\n"
    "Options take their value as --name VALUE or --name=VALUE; -- ends the options.\n"
    "\n"
    "  eval             read one JSON request from FILE (or standard input when FILE is - or\n"
    "                   absent) and print the response on standard output. A rejected request\n"
    "                   prints its error object {\"error\", \"code\", \"field\"} and exits 2.\n"
    "    --jsonl        one request per line, one response or error object per line;\n"
    "                   exits 2 when any line was rejected, after answering every line.\n"
    "    --max-elements N  reject tensors of more than N elements (default: no limit).\n"
    "  eval --loss      the same from numpy .npy files, memory-mapped: --labels, --logits (or\n"
    "                   --predictions, --losses), --weights (or --mask); float32, float64,\n"
    "                   bool, uint8, int32 or int64, C order. --param sets a loss parameter\n"
    "                   (a number, true or false). --per-element, --per-sample, --per-class\n"
    "                   write those outputs as float64 .npy files; the response (without\n"
    "                   them) is printed as usual.\n"
    "  losses           print the catalogue: every loss with its parameters, defaults and\n"
    "                   reductions, as JSON.\n"
    "  bench            elements per second of the hot losses (1K to 16M elements, float32\n"
    "                   and float64, no weights, a full mask, per-class weights) against a\n"
    "                   naive scalar loop on the same data, with both errors against a\n"
    "                   compensated double reference; --json for JSON lines, --quick to stop\n"
    "                   at 1M elements.\n"
    "  monitor          the monitors of a running maskloss-server (--server URL, default\n"
    "                   $MASKLOSS_SERVER or http://127.0.0.1:8080): create, observe, show,\n"
    "                   series, list, delete. --token (or --token-file, $MASKLOSS_TOKEN) for\n"
    "                   a server with tokens; https:// URLs verified against the system's\n"
    "                   trust store or --cacert FILE ($MASKLOSS_CACERT). Exit status 0, 1\n"
    "                   (local failure), 2 (the server answered an error: 401, 403, ...), 3\n"
    "                   (the server cannot be reached, or TLS failed); see\n"
    "                   maskloss monitor --help.\n"
    "  token new        a bearer token for the server's --auth-file, printed once; its hash\n"
    "                   appended to the file (see maskloss token --help).\n"
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

/* ---- eval from .npy files --------------------------------------------------------------- */

enum { IN_LABELS, IN_LOGITS, IN_PREDICTIONS, IN_LOSSES, IN_WEIGHTS, NUM_INPUTS };

struct npy_eval {
    const char *loss, *reduction;
    const char *inputs[NUM_INPUTS];
    const char *out_per_element, *out_per_sample, *out_per_class;
    struct ml_param params[32];
    size_t num_params;
    enum ml_dtype dtype;
    int allow_non_finite;
    long long max_elements;
};

static int parse_param(struct npy_eval *e, char *arg)
{
    char *eq = strchr(arg, '=');
    if (!eq || eq == arg || e->num_params == sizeof(e->params) / sizeof(e->params[0])) {
        fprintf(stderr, "maskloss: --param takes NAME=VALUE (a number, true or false)\n");
        return -1;
    }
    *eq = '\0';
    struct ml_param *p = &e->params[e->num_params];
    memset(p, 0, sizeof(*p));
    p->name = arg;
    const char *v = eq + 1;
    char *end = NULL;
    if (!strcmp(v, "true") || !strcmp(v, "false")) {
        p->kind = ML_PARAM_BOOL;
        p->boolean = !strcmp(v, "true");
    } else {
        p->kind = ML_PARAM_NUMBER;
        p->number = strtod(v, &end);
        if (end == v || *end) {
            fprintf(stderr, "maskloss: --param %s=%s: the value must be a number, true or false\n",
                    arg, v);
            return -1;
        }
    }
    e->num_params++;
    return 0;
}

static int write_output(const char *path, const struct ml_array *a)
{
    if (!path)
        return 0;
    if (npy_write(path, a->data, a->rank, a->shape)) {
        fprintf(stderr, "maskloss: cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

static int eval_npy(struct npy_eval *e)
{
    struct npy_array arrays[NUM_INPUTS];
    struct ml_request req;
    struct ml_result res;
    struct mlp_error err;
    char why[512];
    int rc = 0;
    memset(arrays, 0, sizeof(arrays));
    memset(&err, 0, sizeof(err));
    ml_request_init(&req);
    req.loss = e->loss;
    req.reduction = e->reduction;
    req.dtype = e->dtype;
    req.params = e->params;
    req.num_params = e->num_params;
    req.allow_non_finite = e->allow_non_finite;
    req.max_elements = e->max_elements;
    req.outputs = ML_OUT_LOSS | (e->out_per_element ? ML_OUT_PER_ELEMENT : 0) |
                  (e->out_per_sample ? ML_OUT_PER_SAMPLE : 0) |
                  (e->out_per_class ? ML_OUT_PER_CLASS : 0);
    const struct ml_tensor **slots[NUM_INPUTS] = {&req.labels, &req.logits, &req.predictions,
                                                  &req.losses, &req.weights};
    for (int i = 0; i < NUM_INPUTS; i++) {
        if (!e->inputs[i])
            continue;
        if (npy_open(&arrays[i], e->inputs[i], why, sizeof(why))) {
            fprintf(stderr, "maskloss: %s\n", why);
            rc = 1;
            goto done;
        }
        *slots[i] = &arrays[i].t;
    }
    rc = ml_eval(&req, &res, &err.e);
    struct mlp_buf out = {0};
    if (rc) {
        mlp_error_write(&out, rc, &err);
        rc = write_out(&out) ? 1 : EXIT_INVALID;
        free(out.data);
        goto done;
    }
    rc = write_output(e->out_per_element, &res.per_element) ||
         write_output(e->out_per_sample, &res.per_sample) ||
         write_output(e->out_per_class, &res.per_class);
    /* The arrays went to their files; the response prints the rest. */
    res.outputs &= ~(unsigned)(ML_OUT_PER_ELEMENT | ML_OUT_PER_SAMPLE | ML_OUT_PER_CLASS);
    struct mlp_request shown;
    memset(&shown, 0, sizeof(shown));
    shown.req.dtype = req.dtype;
    mlp_response_write(&out, &res, &shown);
    if (!rc)
        rc = write_out(&out);
    free(out.data);
    ml_result_free(&res);
done:
    for (int i = 0; i < NUM_INPUTS; i++)
        npy_close(&arrays[i]);
    return rc;
}

/* ---- Options ---------------------------------------------------------------------------- */

/* Long options without a short form; every option is given in full or as an unambiguous
 * prefix, its value as `--name value` or `--name=value` (getopt_long). */
enum {
    OPT_VERSION = 256,
    OPT_JSONL,
    OPT_MAX_ELEMENTS,
    OPT_LOSS,
    OPT_INPUT, /* OPT_INPUT + IN_LABELS, ...: --labels, --logits, ... */
    OPT_MASK = OPT_INPUT + NUM_INPUTS,
    OPT_REDUCTION,
    OPT_DTYPE,
    OPT_PARAM,
    OPT_ALLOW_NON_FINITE,
    OPT_PER_ELEMENT,
    OPT_PER_SAMPLE,
    OPT_PER_CLASS,
};

static const struct option main_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static const struct option eval_options[] = {
    {"help", no_argument, NULL, 'h'},
    {"jsonl", no_argument, NULL, OPT_JSONL},
    {"max-elements", required_argument, NULL, OPT_MAX_ELEMENTS},
    /* The .npy form: any of these but --max-elements needs --loss. */
    {"loss", required_argument, NULL, OPT_LOSS},
    {"labels", required_argument, NULL, OPT_INPUT + IN_LABELS},
    {"logits", required_argument, NULL, OPT_INPUT + IN_LOGITS},
    {"predictions", required_argument, NULL, OPT_INPUT + IN_PREDICTIONS},
    {"losses", required_argument, NULL, OPT_INPUT + IN_LOSSES},
    {"weights", required_argument, NULL, OPT_INPUT + IN_WEIGHTS},
    {"mask", required_argument, NULL, OPT_MASK},
    {"reduction", required_argument, NULL, OPT_REDUCTION},
    {"dtype", required_argument, NULL, OPT_DTYPE},
    {"param", required_argument, NULL, OPT_PARAM},
    {"allow-non-finite", no_argument, NULL, OPT_ALLOW_NON_FINITE},
    {"per-element", required_argument, NULL, OPT_PER_ELEMENT},
    {"per-sample", required_argument, NULL, OPT_PER_SAMPLE},
    {"per-class", required_argument, NULL, OPT_PER_CLASS},
    {NULL, 0, NULL, 0},
};

/* getopt_long's '?' (an unknown or ambiguous option) or ':' (a missing value) as a message
 * from `who` ("maskloss", "maskloss eval"). */
static int bad_option(int ch, char **argv, const char *who)
{
    if (ch == ':')
        fprintf(stderr, "%s: %s needs a value (see --help)\n", who, argv[optind - 1]);
    else if (optopt && optopt < 256)
        fprintf(stderr, "%s: unknown option '-%c' (see --help)\n", who, optopt);
    else
        fprintf(stderr, "%s: unknown or ambiguous option '%s' (see --help)\n", who,
                argv[optind - 1]);
    return EXIT_USAGE;
}

static int parse_max_elements(const char *v, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (end == v || *end || errno || n < 0) {
        fprintf(stderr, "maskloss: --max-elements takes a non-negative integer, not '%s'\n", v);
        return -1;
    }
    *out = n;
    return 0;
}

/* ---- Commands --------------------------------------------------------------------------- */

static int cmd_eval(int argc, char **argv)
{
    struct npy_eval e;
    memset(&e, 0, sizeof(e));
    e.dtype = ML_FLOAT32;
    int jsonl = 0;
    const char *npy_option = NULL; /* the first option of the .npy form, for messages */
    int ch, index;
    optind = 0; /* a full reset of getopt's state: main() scanned its own options */
    opterr = 0; /* our own messages, naming the option */
    while ((ch = getopt_long(argc, argv, ":h", eval_options, &index)) != -1) {
        if (ch >= OPT_LOSS && !npy_option)
            npy_option = eval_options[index].name;
        switch (ch) {
        case 'h':
            fputs(usage, stdout);
            return 0;
        case OPT_JSONL:
            jsonl = 1;
            break;
        case OPT_MAX_ELEMENTS:
            if (parse_max_elements(optarg, &e.max_elements))
                return EXIT_USAGE;
            break;
        case OPT_LOSS:
            e.loss = optarg;
            break;
        case OPT_MASK:
            e.inputs[IN_WEIGHTS] = optarg;
            break;
        case OPT_REDUCTION:
            e.reduction = optarg;
            break;
        case OPT_DTYPE:
            if (strcmp(optarg, "float32") && strcmp(optarg, "float64")) {
                fprintf(stderr, "maskloss: --dtype is float32 or float64\n");
                return EXIT_USAGE;
            }
            e.dtype = strcmp(optarg, "float64") ? ML_FLOAT32 : ML_FLOAT64;
            break;
        case OPT_PARAM:
            if (parse_param(&e, optarg))
                return EXIT_USAGE;
            break;
        case OPT_ALLOW_NON_FINITE:
            e.allow_non_finite = 1;
            break;
        case OPT_PER_ELEMENT:
            e.out_per_element = optarg;
            break;
        case OPT_PER_SAMPLE:
            e.out_per_sample = optarg;
            break;
        case OPT_PER_CLASS:
            e.out_per_class = optarg;
            break;
        default:
            if (ch >= OPT_INPUT && ch < OPT_INPUT + NUM_INPUTS) {
                e.inputs[ch - OPT_INPUT] = optarg;
                break;
            }
            return bad_option(ch, argv, "maskloss eval");
        }
    }
    if (e.loss) {
        if (jsonl || optind < argc) {
            fprintf(stderr, "maskloss: eval --loss reads .npy files: %s does not apply\n%s",
                    jsonl ? "--jsonl" : argv[optind], usage);
            return EXIT_USAGE;
        }
        return eval_npy(&e);
    }
    if (npy_option) {
        fprintf(stderr, "maskloss: --%s needs --loss (eval from .npy files)\n%s", npy_option,
                usage);
        return EXIT_USAGE;
    }
    if (argc - optind > 1) {
        fprintf(stderr, "maskloss: eval takes one FILE\n%s", usage);
        return EXIT_USAGE;
    }
    const char *path = optind < argc ? argv[optind] : NULL;
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
    int rc = jsonl ? eval_lines(in, name, e.max_elements) : eval_one(in, name, e.max_elements);
    if (in != stdin)
        fclose(in);
    return rc;
}

int main(int argc, char **argv)
{
    int ch;
    /* jansson's allocator reports failures to mlp_parse (mlp.h). */
    json_set_alloc_funcs(mlp_json_malloc, free);
    opterr = 0; /* our own messages, naming the option */
    /* "+": stop at the command; ":": a missing value returns ':'. */
    while ((ch = getopt_long(argc, argv, "+:h", main_options, NULL)) != -1) {
        switch (ch) {
        case 'h':
            fputs(usage, stdout);
            return 0;
        case OPT_VERSION:
            printf("maskloss %s\n", ML_VERSION);
            return 0;
        default:
            return bad_option(ch, argv, "maskloss");
        }
    }
    if (optind == argc) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    /* A command sees its own name as argv[0]. */
    const char *command = argv[optind];
    argc -= optind;
    argv += optind;
    if (!strcmp(command, "help")) {
        fputs(usage, stdout);
        return 0;
    }
    if (!strcmp(command, "eval"))
        return cmd_eval(argc, argv);
    if (!strcmp(command, "bench"))
        return maskloss_bench(argc - 1, argv + 1);
    if (!strcmp(command, "monitor"))
        return maskloss_monitor(argc - 1, argv + 1);
    if (!strcmp(command, "token"))
        return maskloss_token(argc - 1, argv + 1);
    if (!strcmp(command, "losses")) {
        if (argc > 1) {
            fprintf(stderr, "maskloss: losses takes no argument\n%s", usage);
            return EXIT_USAGE;
        }
        struct mlp_buf b = {0};
        mlp_catalogue_write(&b);
        int rc = write_out(&b);
        free(b.data);
        return rc;
    }
    fprintf(stderr, "maskloss: unknown command '%s'\n%s", command, usage);
    return EXIT_USAGE;
}
