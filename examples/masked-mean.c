/*
 * masked-mean.c -- the note's masked example (examples/masked-mean.json) through libmaskloss
 * itself: no server, no JSON, the tensors used where they lie. The fastest client of all.
 *
 * Build against an installed libmaskloss (make install; maskloss.pc says where it is):
 *
 *     cc -std=c11 -o masked-mean masked-mean.c $(pkg-config --cflags --libs maskloss)
 *     ./masked-mean
 *
 * prints the loss as POST /v1/loss answers it for the same request (the shortest decimal that
 * reads back as the same double), the count of non-zero weights and the loss of each row.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <maskloss.h>

/* The shortest %.*g that reads back as v: the digits the server's JSON writes. */
static void print_double(const char *name, double v)
{
    char text[32];
    for (int digits = 1; digits <= 17; digits++) {
        snprintf(text, sizeof(text), "%.*g", digits, v);
        if (strtod(text, NULL) == v)
            break;
    }
    printf("%s %s\n", name, text);
}

int main(void)
{
    /* A model's 4 samples of 5 classes: labels and mask as bytes, logits as float32 as a
     * model writes them; the work in float64 (dtype). The library reads each type as it is. */
    static const uint8_t labels[4][5] = {
        {1, 1, 0, 0, 0}, {0, 1, 1, 1, 0}, {0, 0, 0, 0, 1}, {1, 1, 1, 1, 1}};
    static const double logits[4][5] = {{0.2, 0.2, 0.2, 0, 0.8},
                                        {0, 0.5, 0.5, 0.2, 0},
                                        {0, 0.5, 0.1, 0.0, 0.9},
                                        {0.9, 0.9, 0.7, 0.1, 0.0}};
    static const uint8_t mask[4][5] = {
        {1, 0, 0, 0, 0}, {0, 0, 1, 1, 0}, {0, 0, 1, 0, 1}, {0, 1, 1, 1, 1}};
    const struct ml_tensor tl = {2, {4, 5}, ML_UINT8, labels};
    const struct ml_tensor tx = {2, {4, 5}, ML_FLOAT64, logits};
    const struct ml_tensor tm = {2, {4, 5}, ML_BOOL, mask};

    struct ml_request req;
    ml_request_init(&req);
    req.loss = "sigmoid_cross_entropy";
    req.dtype = ML_FLOAT64;
    req.labels = &tl;
    req.logits = &tx;
    req.weights = &tm;
    req.outputs = ML_OUT_LOSS | ML_OUT_NUM_NONZERO_WEIGHTS | ML_OUT_PER_SAMPLE;

    struct ml_result res;
    struct ml_error err;
    int status = ml_eval(&req, &res, &err);
    if (status != 0) {
        /* The same codes and fields as the server's error objects. */
        fprintf(stderr, "masked-mean: %s (%s, field '%s')\n", err.message, ml_status_name(status),
                err.field);
        return 1;
    }
    printf("libmaskloss %s, %s, reduction %s\n", ml_version(), res.loss_name, res.reduction_name);
    print_double("loss", res.loss);
    printf("num_nonzero_weights %.0f\n", res.num_nonzero_weights);
    for (int64_t i = 0; i < res.per_sample.numel; i++)
        print_double("per_sample", res.per_sample.data[i]);
    ml_result_free(&res);
    return 0;
}
