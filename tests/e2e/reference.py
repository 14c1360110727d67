"""Expected values computed here, independently of maskloss: the published formulas in
Python floats with math.fsum, and the golden-case checks (the rules of the project's shared
golden-vector runner, restated here)."""
import math
import random

# ---- Formulas -------------------------------------------------------------------------------


def sigmoid_ce(z, x):
    """TensorFlow's sigmoid_cross_entropy_with_logits: max(x, 0) - x z + log(1 + exp(-|x|))."""
    return max(x, 0.0) - x * z + math.log1p(math.exp(-abs(x)))


def tf_masked_mean(labels, logits, weights):
    """tf.compat.v1.losses.sigmoid_cross_entropy, SUM_BY_NONZERO_WEIGHTS: the weighted sum
    over the count of non-zero weights, 0 when there are none."""
    terms, nonzero = [], 0
    for zr, xr, wr in zip(labels, logits, weights):
        for z, x, w in zip(zr, xr, wr):
            terms.append(sigmoid_ce(z, x) * w)
            nonzero += w != 0
    return math.fsum(terms) / nonzero if nonzero else 0.0


def torch_weighted_mean(labels, logits, weights):
    """torch binary_cross_entropy_with_logits(weight=w, reduction='mean'): sum(l w) / numel."""
    terms = [sigmoid_ce(z, x) * w for zr, xr, wr in zip(labels, logits, weights)
             for z, x, w in zip(zr, xr, wr)]
    return math.fsum(terms) / len(terms)


def close(got, want, rtol=1e-12, atol=1e-15):
    return isinstance(got, (int, float)) and abs(got - want) <= atol + rtol * abs(want)


def random_case(rng, n, c, kind):
    """A float64 request of shape [n, c] and its expected answer (loss, per_element or None)."""
    labels = [[rng.randint(0, 1) for _ in range(c)] for _ in range(n)]
    logits = [[round(rng.uniform(-6, 6), 6) for _ in range(c)] for _ in range(n)]
    mask = [[rng.choice((0, 0, 1, 1, 0.5)) for _ in range(c)] for _ in range(n)]
    req = {"dtype": "float64", "labels": labels, "logits": logits, "mask": mask}
    per = None
    if kind == "torch":
        req["loss"] = "torch.nn.functional.binary_cross_entropy_with_logits"
        want = torch_weighted_mean(labels, logits, mask)
    else:
        req["loss"] = "sigmoid_cross_entropy"
        want = tf_masked_mean(labels, logits, mask)
        if kind == "per_element":
            req["outputs"] = ["loss", "per_element"]
            # per_element is the pointwise loss before weights (proto/README.md).
            per = [[sigmoid_ce(z, x) for z, x in zip(zr, xr)] for zr, xr in zip(labels, logits)]
    return req, want, per


def check_answer(body, want, per):
    """None when body answers (want, per), else what is wrong."""
    if not isinstance(body, dict) or "loss" not in body:
        return f"not a response: {str(body)[:200]}"
    if not close(body["loss"], want):
        return f"loss {body['loss']!r}, expected {want!r}"
    if per is not None:
        got = body.get("per_element")
        if not isinstance(got, list) or len(got) != len(per):
            return "per_element has the wrong shape"
        for i, (gr, wr) in enumerate(zip(got, per)):
            for j, (g, w) in enumerate(zip(gr, wr)):
                if not close(g, w):
                    return f"per_element[{i}][{j}] = {g!r}, expected {w!r}"
    return None


def make_rng(seed):
    return random.Random(seed)

# ---- Golden cases (the golden-vector runner's rules) --------------------------------------


META = {"id", "source", "notes", "expected", "expected_per_element", "expected_error", "expected_code",
        "expected_special", "tolerance", "upstream", "computed_expected"}


def flat(v):
    if isinstance(v, dict) and "data" in v:
        v = v["data"]
    if isinstance(v, list):
        out = []
        for x in v:
            out.extend(flat(x))
        return out
    return [v]


def num(x):
    if isinstance(x, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(x, x)
    return x


def golden_close(got, want, tol):
    got, want = num(got), num(want)
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        return False
    if math.isnan(want):
        return math.isnan(got)
    if math.isinf(want):
        return got == want
    return abs(got - want) <= tol.get("atol", 0) + tol.get("rtol", 0) * abs(want)


def golden_request(case):
    req = {k: v for k, v in case.items() if k not in META}
    req["outputs"] = ["loss", "per_element"] if "expected_per_element" in case else ["loss"]
    if req.get("reduction") == "ELEMENTWISE":
        del req["reduction"]
    return req


def golden_tolerance(case):
    tol = dict(case.get("tolerance") or {})
    if case.get("dtype") == "float32":
        tol["rtol"] = max(tol.get("rtol", 0), 2e-5)
        tol["atol"] = max(tol.get("atol", 0), 1e-6)
    tol.setdefault("rtol", 1e-9)
    tol.setdefault("atol", 1e-12)
    return tol


def golden_check(case, ok, body):
    """None when the answer matches the case, else what is wrong."""
    if case.get("expected_error"):
        if ok:
            return "accepted an input the reference rejects (%s)" % case["expected_error"][:80]
        if not isinstance(body, dict) or "error" not in body or "code" not in body:
            return "rejected without an error object"
        if "expected_code" not in case:
            return "the case has expected_error but no expected_code"
        if body["code"] != case["expected_code"]:
            return f"error code {body['code']!r}, expected {case['expected_code']!r}: {body['error'][:120]}"
        return None
    if not ok or not isinstance(body, dict):
        return f"failed: {str(body)[:200]}"
    tol = golden_tolerance(case)
    want = math.nan if case.get("expected_special") == "nan" else case["expected"]
    got = body.get("loss")
    if isinstance(want, (dict, list)):
        g, w = flat(got), flat(want)
        if len(g) != len(w):
            return f"loss has {len(g)} elements, expected {len(w)}"
        bad = [i for i in range(len(w)) if not golden_close(g[i], w[i], tol)]
        if bad:
            return f"loss[{bad[0]}] = {g[bad[0]]!r}, expected {w[bad[0]]!r}"
    elif not golden_close(got, want, tol):
        return f"loss = {got!r}, expected {want!r}"
    if "expected_per_element" in case:
        g, w = flat(body.get("per_element")), flat(case["expected_per_element"])
        if len(g) != len(w):
            return f"per_element has {len(g)} elements, expected {len(w)}"
        bad = [i for i in range(len(w)) if not golden_close(g[i], w[i], tol)]
        if bad:
            return f"per_element[{bad[0]}] = {g[bad[0]]!r}, expected {w[bad[0]]!r}"
    return None
