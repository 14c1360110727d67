/*
 * fuzz_batch.c -- the /v1/batch body: mlp_parse, then mlp_eval_batch with a small element
 * limit.
 *
 * Invariants: the answer is valid JSON; a rejected envelope is an error object with a known
 * code, no entry reported; no entry runs out of memory (4096 elements at most); an
 * accepted one is {"responses": [...]} with one answer per
 * request (the count returned, the on_entry calls and the array agree), each answer the
 * error object of its entry's status or a success, and equal to what mlp_eval_value
 * answers for that entry alone.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

#define MAX_ELEMENTS 4096
#define MAX_RECORDED 4096

struct entries {
    size_t calls;
    int status[MAX_RECORDED];
};

static void on_entry(void *cls, int status, const struct mlp_eval_info *info)
{
    struct entries *e = cls;
    FUZZ_CHECK(status != ML_ENOMEM, "entry %zu: out_of_memory with 4096 elements at most",
               e->calls);
    if (e->calls < MAX_RECORDED)
        e->status[e->calls] = status;
    e->calls++;
    FUZZ_CHECK((status == 0) == (info->loss_name != NULL), "entry %zu: status %d, loss name %s",
               e->calls - 1, status, info->loss_name ? info->loss_name : "(none)");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mlp_error err;
    json_t *root;
    if (mlp_parse((const char *)data, size, &root, &err))
        return 0; /* fuzz_loss covers the malformed_json answer */

    static struct entries entries; /* large: not on the stack */
    struct mlp_buf b = {0};
    struct mlp_exec exec = {MAX_ELEMENTS, NULL, NULL};
    size_t count = (size_t)-1;
    entries.calls = 0;
    int rc = mlp_eval_batch(root, &exec, &b, &count, on_entry, &entries);
    FUZZ_CHECK(!b.failed, "out of memory");
    json_t *answer = fuzz_parse_json(b.data, b.len, "the /v1/batch answer");
    if (rc) {
        fuzz_check_error(answer, rc);
        FUZZ_CHECK(count == 0 && entries.calls == 0, "a rejected batch ran %zu entries",
                   entries.calls);
    } else {
        const json_t *requests = json_object_get(root, "requests");
        const json_t *responses = json_object_get(answer, "responses");
        FUZZ_CHECK(json_is_array(requests), "an accepted batch without a requests array");
        FUZZ_CHECK(json_is_object(answer) && json_object_size(answer) == 1 &&
                       json_is_array(responses),
                   "the answer is not {\"responses\": [...]}");
        size_t n = json_array_size(requests);
        FUZZ_CHECK(count == n && entries.calls == n && json_array_size(responses) == n,
                   "%zu requests, count %zu, %zu entries reported, %zu answers", n, count,
                   entries.calls, json_array_size(responses));
        for (size_t i = 0; i < n && i < MAX_RECORDED; i++) {
            const json_t *one = json_array_get(responses, i);
            if (entries.status[i])
                fuzz_check_error(one, entries.status[i]);
            else
                fuzz_check_v1_success(one);
            /* The same entry alone. */
            struct mlp_buf alone = {0};
            int rc1 = mlp_eval_value(json_array_get(requests, i), &exec, &alone, NULL);
            FUZZ_CHECK(!alone.failed, "out of memory");
            json_t *doc = fuzz_parse_json(alone.data, alone.len, "an entry's answer alone");
            FUZZ_CHECK(rc1 == entries.status[i] && json_equal(doc, (json_t *)one),
                       "entry %zu: answered %s in the batch, %s alone", i,
                       json_dumps(one, JSON_COMPACT), alone.data);
            json_decref(doc);
            free(alone.data);
        }
    }
    json_decref(answer);
    json_decref(root);
    free(b.data);
    return 0;
}
