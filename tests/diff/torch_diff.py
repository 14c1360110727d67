#!/usr/bin/env python3
"""Differential test of maskloss's torch-family losses against PyTorch 1.13 itself.

usage: torch_diff.py [--quick] [--cases N] [--seed S] [--maskloss build/maskloss]
                     [--case SEED:I | fixed:K] [--audit | --no-audit] [--dump FILE]
                     [--verbose]

For thousands of random, seeded cases (adversarial ones included: |logits| up to 1e4,
confident correct predictions whose loss is tiny, soft labels, masks with zeros and
all-zero masks, class weights with zeros, ignore_index, label_smoothing, pos_weight [C],
[N,1], 0-d, a number and 0, probability targets, 1-D, 0-d and [N,C,d] inputs, empty
batches, batches over one 1024-element block, invalid parameters, NaN and infinite logits
with allow_non_finite, masks sent as bool/uint8, indices as int32, integer parameters as
0-d int tensors) and hand-written cases (the defects of issue 10 among them), it evaluates,
in float32 and float64,

  torch.nn.functional.binary_cross_entropy_with_logits   (weight, pos_weight, reductions)
  torch.nn.functional.cross_entropy                      (weight, ignore_index,
                                                          label_smoothing, index and
                                                          probability targets, reductions)
  torchvision.ops.sigmoid_focal_loss                     (alpha, gamma, reductions)
  ASL AsymmetricLoss.forward                             (reimplemented below, verbatim)

with torch and with maskloss (`maskloss eval --jsonl`, one process for all cases, tensors
sent as base64 of their exact bytes), and compares the loss and the per-element output.
maskloss's weights for focal and ASL (an extension) are applied to torch's elementwise
result the way torch BCE applies its weight (in place: they must broadcast to the input).

Arbitration. Where maskloss and torch differ by more than 2 ulp of the dtype (relative to
the larger magnitude), the value is computed exactly (mpmath, 60 digits) from the same
float inputs with the framework's formula (float32 ASL: clip and eps as the float32
scalars torch uses). maskloss fails when
  * it is further from the exact value than torch, by more than 4 ulp of the dtype
    relative to max(|exact|, the sum of the magnitudes of the terms that make it), the
    second mattering only where the formula itself cancels (weights of both signs, alpha
    outside [0, 1]), or
  * it disagrees with torch on NaN / Inf / finite and the exact value does not side with
    maskloss (with non-finite inputs torch is the reference: no exact value), or
  * one of them refuses the request (torch raises, maskloss answers an error object) and
    the other does not, or the shapes differ.
Every maskloss failure is reduced to a minimal input (one element, one row, or the
smallest subset of elements/rows that still fails the same way, each candidate re-run) and
printed as a maskloss request with plain JSON numbers (exact: float32 values are doubles).

The audit (default without --quick) computes the exact value of every value and tables,
per loss, dtype and output, how many values maskloss and torch leave more than 4 ulp from
it; it lists where maskloss is that far although torch is no closer. Not failures.

Exit status: 1 when any maskloss failure was found, 0 otherwise. The closing line is
`N passed, N failed` (cases).

Needs Debian's python3-torch (1.13), python3-torchvision, python3-numpy, python3-mpmath.
"""
import argparse
import base64
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict

import mpmath
import numpy as np
import torch
import torch.nn.functional as F
import torchvision.ops

mp = mpmath.mp
mp.dps = 60
torch.set_num_threads(1)

KINDS = ("bce", "ce", "focal", "asl")
LOSS_NAME = {
    "bce": "torch.nn.functional.binary_cross_entropy_with_logits",
    "ce": "torch.nn.functional.cross_entropy",
    "focal": "torchvision.ops.sigmoid_focal_loss",
    "asl": "ASL.AsymmetricLoss",
}
DEFAULT_REDUCTION = {"bce": "mean", "ce": "mean", "focal": "none", "asl": "sum"}
NP_DTYPE = {"float32": np.float32, "float64": np.float64}
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}
# unit roundoff * 2 (one ulp at 1) and the smallest subnormal, per dtype
ULP1 = {"float32": 2.0 ** -23, "float64": 2.0 ** -52}
TINY = {"float32": 2.0 ** -149, "float64": 2.0 ** -1074}
FMAX = {"float32": float(np.finfo(np.float32).max), "float64": sys.float_info.max}
DISAGREE_ULPS = 2      # torch and maskloss closer than this are not arbitrated
SLACK_ULPS = 4         # maskloss may be this much further from exact than torch


# ---------------------------------------------------------------------------------------
# The references

def asl_forward_terms(x, y, gamma_neg, gamma_pos, clip, eps):
    """Alibaba-MIIL/ASL src/loss_functions/losses.py AsymmetricLoss.forward, verbatim up to
    `return -loss.sum()`: returns `loss` (before the minus sign and the sum)."""
    x_sigmoid = torch.sigmoid(x)
    xs_pos = x_sigmoid
    xs_neg = 1 - x_sigmoid
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=eps))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
    loss = los_pos + los_neg
    if gamma_neg > 0 or gamma_pos > 0:
        pt0 = xs_pos * y
        pt1 = xs_neg * (1 - y)
        pt = pt0 + pt1
        one_sided_gamma = gamma_pos * y + gamma_neg * (1 - y)
        one_sided_w = torch.pow(1 - pt, one_sided_gamma)
        loss *= one_sided_w
    return loss


def asl_forward(x, y, gamma_neg=4, gamma_pos=1, clip=0.05, eps=1e-8):
    return -asl_forward_terms(x, y, gamma_neg, gamma_pos, clip, eps).sum()


def _weigh(loss, w):
    """maskloss's extension for focal and ASL: the weights multiply the elementwise loss and
    must broadcast to it (like torch BCE's in-place `loss.mul_(weight)`)."""
    if w is None:
        return loss
    return loss.clone().mul_(w)


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def torch_eval(case):
    """{'loss': ndarray, 'per_element': ndarray} or {'error': message}."""
    kind, p = case["kind"], case["params"]
    red = case.get("reduction") or DEFAULT_REDUCTION[kind]
    x = torch.from_numpy(case["x"].copy())
    z = torch.from_numpy(case["z"].copy())
    w = None if case.get("w") is None else torch.from_numpy(case["w"].copy())
    try:
        if kind == "bce":
            pw = p.get("pos_weight")
            if pw is not None:
                pw = torch.from_numpy(np.asarray(pw, dtype=case["x"].dtype).copy())
            loss = F.binary_cross_entropy_with_logits(x, z, weight=w, pos_weight=pw,
                                                      reduction=red)
            per = F.binary_cross_entropy_with_logits(x, z, pos_weight=pw, reduction="none")
        elif kind == "ce":
            kw = {}
            if "ignore_index" in p:
                kw["ignore_index"] = p["ignore_index"]
            if "label_smoothing" in p:
                kw["label_smoothing"] = p["label_smoothing"]
            loss = F.cross_entropy(x, z, weight=w, reduction=red, **kw)
            per = F.cross_entropy(x, z, weight=w, reduction="none", **kw)
        elif kind == "focal":
            kw = {k: p[k] for k in ("alpha", "gamma") if k in p}
            per = torchvision.ops.sigmoid_focal_loss(x, z, reduction="none", **kw)
            loss = _reduce(_weigh(per, w), red)
        elif kind == "asl":
            kw = {k: p[k] for k in ("gamma_neg", "gamma_pos", "clip", "eps") if k in p}
            if w is None and red == "sum":
                loss = asl_forward(x, z, **kw)            # the reference itself
                per = -asl_forward_terms(x, z, **_asl_defaults(kw))
            else:
                per = -asl_forward_terms(x, z, **_asl_defaults(kw))
                loss = _reduce(_weigh(per, w), red)
        else:
            raise AssertionError(kind)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        return {"error": str(e).split("\n")[0]}
    return {"loss": loss.detach().double().numpy(), "per_element": per.detach().double().numpy()}


def _asl_defaults(kw):
    d = {"gamma_neg": 4, "gamma_pos": 1, "clip": 0.05, "eps": 1e-8}
    d.update(kw)
    return d


# ---------------------------------------------------------------------------------------
# maskloss through its command line (the JSON protocol)

WIRE = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "int32": np.int32,
        "uint8": np.uint8, "bool": np.bool_}


def tensor_b64(a, wire=None):
    """The tensor as base64 of its little-endian bytes, in its own dtype or in `wire` (the
    values must survive the conversion: 0/1 masks as bool or uint8, indices as int32)."""
    a = np.array(a, order="C")          # (np.ascontiguousarray makes a 0-d array 1-d)
    if wire is not None:
        b = a.astype(WIRE[wire])
        assert np.array_equal(b.astype(a.dtype), a), (wire, a)
        a = b
    name = {np.dtype(t): n for n, t in WIRE.items()}[a.dtype]
    return {"shape": list(a.shape), "dtype": name,
            "b64": base64.b64encode(a.astype(a.dtype.newbyteorder("<")).tobytes()).decode()}


def _json_num(v):
    if isinstance(v, list):
        return [_json_num(e) for e in v]
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    return v


def tensor_plain(a, wire=None):
    """The same tensor as JSON numbers (exact: a float32 is a double; shortest repr)."""
    a = np.asarray(a)
    if a.dtype == np.int64:
        data = a.tolist()
    else:
        data = _json_num(a.astype(np.float64).tolist())
    if a.size == 0 or a.ndim == 0:
        return {"shape": list(a.shape), "data": [data] if a.ndim == 0 else []}
    return data


def to_request(case, plain=False):
    """The maskloss request of a case: tensors as base64 (exact bytes, in the dtype that
    case["wire"] names for some of them), or as plain JSON numbers for the report."""
    enc = tensor_plain if plain else tensor_b64
    wire = case.get("wire", {})
    req = {"loss": LOSS_NAME[case["kind"]], "dtype": case["dtype"],
           "labels": enc(case["z"], wire.get("z")), "logits": enc(case["x"])}
    if case.get("w") is not None:
        req["weights"] = enc(case["w"], wire.get("w"))
    params = {}
    for k, v in case["params"].items():
        if isinstance(v, np.ndarray):
            params[k] = enc(v)
        elif k in wire.get("int_params", ()) and not plain:
            params[k] = tensor_b64(np.asarray(int(v)), wire["int_params"][k])
        else:
            params[k] = v
    if params:
        req["params"] = params
    if case.get("reduction") is not None:
        red = case["reduction"]
        req["reduction"] = red.upper() if wire.get("upper") and not plain else red
    if case.get("allow_non_finite"):
        req["allow_non_finite"] = True
    req["outputs"] = ["loss", "per_element"]
    return req


def _num(v):
    if isinstance(v, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[v]
    return float(v)


def _arr(v):
    if isinstance(v, list):
        return np.array([_arr(e) for e in v], dtype=np.float64) if v else np.zeros(0)
    return np.float64(_num(v))


def _answer(line):
    d = json.loads(line)
    if "error" in d:
        return {"error": d["error"], "code": d.get("code")}
    return {"loss": _arr(d["loss"]), "per_element": _arr(d.get("per_element", [])),
            "shape": d.get("shape")}


def _eval_jsonl(cli, requests, timeout):
    text = "".join(json.dumps(r, separators=(",", ":"), allow_nan=False) + "\n"
                   for r in requests)
    try:
        p = subprocess.run([cli, "eval", "--jsonl", "-"], input=text, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"no answer within {timeout} s"
    lines = p.stdout.splitlines()
    if p.returncode not in (0, 2) or len(lines) != len(requests):
        return None, (f"exit {p.returncode}, {len(lines)} answers for {len(requests)} "
                      f"requests: {p.stderr.strip()[-300:]}")
    return [_answer(line) for line in lines], None


def run_maskloss(cli, requests):
    """Answers to the requests, in order, from one `maskloss eval --jsonl` process. If that
    process crashes or hangs, each request is re-run alone, and those that crash or hang
    get {"crash": what happened} (a failure whatever torch says)."""
    if not os.access(cli, os.X_OK):
        raise SystemExit(f"{cli}: not an executable (build it first, or pass --maskloss)")
    out, why = _eval_jsonl(cli, requests, 600)
    if out is not None:
        return out
    print(f"maskloss eval --jsonl failed ({why}); running each request alone",
          file=sys.stderr)
    out = []
    for r in requests:
        a, why = _eval_jsonl(cli, [r], 30)
        out.append(a[0] if a is not None else {"crash": why})
    return out


# ---------------------------------------------------------------------------------------
# Exact values: the framework's formula in 60-digit arithmetic on the same float inputs

def M(v):
    return mp.mpf(float(v))


def mp_div(a, b):
    """IEEE division: 0/0 is NaN, a/0 is a signed infinity."""
    if mp.isnan(a) or mp.isnan(b):
        return mp.nan
    if b == 0:
        return mp.nan if a == 0 else (mp.inf if a > 0 else -mp.inf)
    return a / b


def softplus(t):
    """log(1 + e^t), with no cancellation."""
    if t > 0:
        return t + mp.log1p(mp.exp(-t))
    return mp.log1p(mp.exp(t))


def sigmoid(t):
    return 1 / (1 + mp.exp(-t))


def _bcast(a, shape):
    return None if a is None else np.broadcast_to(np.asarray(a), shape)


def _mp_sum(values):
    s = mp.mpf(0)
    for v in values:
        s += v
    return s


def exact_elementwise(case):
    """Exact per-element loss (before weights) of the elementwise kinds, as a flat list, and
    each one's scale: the sum of the magnitudes of the terms that make it (larger than the
    value only where the formula itself cancels, as alpha_t does for alpha outside [0, 1])."""
    kind, p = case["kind"], case["params"]
    x, z = case["x"], case["z"]
    shape = x.shape
    xs = [M(v) for v in x.ravel()]
    zs = [M(v) for v in z.ravel()]
    out, scales = [], None
    if kind == "bce":
        pw = _bcast(p.get("pos_weight"), shape)
        pws = [mp.mpf(1)] * len(xs) if pw is None else [M(v) for v in np.ravel(pw)]
        for xi, zi, qi in zip(xs, zs, pws):
            # (1-z) x - (1 + (q-1) z) log_sigmoid(x) = q z softplus(-x) + (1-z) softplus(x)
            out.append(qi * zi * softplus(-xi) + (1 - zi) * softplus(xi))
    elif kind == "focal":
        alpha = M(p.get("alpha", 0.25))
        gamma = M(p.get("gamma", 2))
        scales = []
        for xi, zi in zip(xs, zs):
            ce = zi * softplus(-xi) + (1 - zi) * softplus(xi)
            one_minus_pt = zi * sigmoid(-xi) + (1 - zi) * sigmoid(xi)   # 1 - p_t, exactly
            v = ce * (one_minus_pt ** gamma if gamma != 0 else mp.mpf(1))
            sc = abs(v)
            if alpha >= 0:
                sc *= abs(alpha * zi) + abs((1 - alpha) * (1 - zi))
                v *= alpha * zi + (1 - alpha) * (1 - zi)
            out.append(v)
            scales.append(sc)
    elif kind == "asl":
        d = _asl_defaults(p)
        gn, gp, clip, eps = M(d["gamma_neg"]), M(d["gamma_pos"]), d["clip"], d["eps"]
        if case["dtype"] == "float32":
            # torch applies a Python scalar to a float32 tensor as a float32
            clip = float(np.float32(clip)) if clip is not None else None
            eps = float(np.float32(eps))
        eps = M(eps)
        leps = mp.log(eps) if eps > 0 else -mp.inf
        for xi, zi in zip(xs, zs):
            xs_pos = sigmoid(xi)
            log_pos = -softplus(-xi)                   # log(sigmoid(x)), no rounding to 1
            one_minus_neg = xs_pos                     # 1 - xs_neg, exactly
            if clip is not None and clip > 0:
                c = M(clip)
                xs_neg = min(sigmoid(-xi) + c, mp.mpf(1))
                log_neg = mp.log(xs_neg)
                one_minus_neg = max(xs_pos - c, mp.mpf(0))
            else:
                log_neg = -softplus(xi)
            # log(max(u, eps)) = max(log u, log eps)
            loss = zi * max(log_pos, leps) + (1 - zi) * max(log_neg, leps)
            if d["gamma_neg"] > 0 or d["gamma_pos"] > 0:
                one_minus_pt = zi * sigmoid(-xi) + (1 - zi) * one_minus_neg
                g = gp * zi + gn * (1 - zi)
                loss *= one_minus_pt ** g if g != 0 else mp.mpf(1)
            out.append(-loss)
    return out, scales if scales is not None else [abs(v) for v in out]


def exact_case(case):
    """{'loss': [exact...] (flat), 'loss_scale': [..], 'per_element': [exact...] (flat)}."""
    kind, red = case["kind"], case.get("reduction") or DEFAULT_REDUCTION[case["kind"]]
    if kind == "ce":
        return exact_ce(case, red)
    per, per_scale = exact_elementwise(case)
    w = _bcast(case.get("w"), case["x"].shape)
    ws = [mp.mpf(1)] * len(per) if w is None else [M(v) for v in np.ravel(w)]
    weighted = [a * b for a, b in zip(per, ws)]
    wscale = [a * abs(b) for a, b in zip(per_scale, ws)]
    out = {"per_element": per, "per_scale": per_scale}
    if red == "none":
        return dict(out, loss=weighted, loss_scale=wscale)
    total, scale = _mp_sum(weighted), _mp_sum(wscale)
    if red == "mean":
        n = mp.mpf(len(per))
        return dict(out, loss=[mp_div(total, n)], loss_scale=[mp_div(scale, n)])
    return dict(out, loss=[total], loss_scale=[scale])


def _ce_rows(case):
    """Logits as rows [R, C] (the class dim moved last), targets as [R] or [R, C]."""
    x = case["x"]
    if x.ndim == 1:
        return x.reshape(1, -1), case["z"].reshape(1, *case["z"].shape)
    xr = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    z = case["z"]
    if z.dtype == np.int64:
        return xr, z.reshape(-1)
    return xr, np.moveaxis(z, 1, -1).reshape(-1, x.shape[1])


def exact_ce(case, red):
    p = case["params"]
    xr, zr = _ce_rows(case)
    R, C = xr.shape
    ls = M(max(p.get("label_smoothing", 0.0), 0.0))   # torch ignores ls <= 0
    ii = p.get("ignore_index", -100)
    w = case.get("w")
    wc = [mp.mpf(1)] * C if w is None else [M(v) for v in w]
    per, scale_terms = [], []
    num_nll, num_smooth, den, den_abs = mp.mpf(0), mp.mpf(0), mp.mpf(0), mp.mpf(0)
    for r in range(R):
        xs = [M(v) for v in xr[r]]
        top_i = max(range(C), key=lambda c: xs[c])
        top = xs[top_i]
        # log_softmax = (x - top) - log1p(sum of the others' exp(x - top)): no rounding of
        # 1 + tiny to 1, so a confident row keeps its tiny loss
        rest = mp.log1p(_mp_sum(mp.exp(xs[c] - top) for c in range(C) if c != top_i))
        logp = [(v - top) - rest for v in xs]
        if zr.dtype == np.int64:
            t = int(zr[r])
            if t == ii:
                nll, smooth, smooth_abs = mp.mpf(0), mp.mpf(0), mp.mpf(0)
            else:
                nll = -wc[t] * logp[t]
                smooth = -_mp_sum(wc[c] * logp[c] for c in range(C))
                smooth_abs = _mp_sum(abs(wc[c] * logp[c]) for c in range(C))
                den += wc[t]
                den_abs += abs(wc[t])
            v = nll if ls == 0 else (1 - ls) * nll + ls / C * smooth
            sc = abs(nll) if ls == 0 else (1 - ls) * abs(nll) + ls / C * smooth_abs
            num_nll += nll
            num_smooth += smooth
        else:
            ts = [M(v) * (1 - ls) + ls / C for v in zr[r]]
            v = -_mp_sum(wc[c] * ts[c] * logp[c] for c in range(C))
            sc = _mp_sum(abs(wc[c] * ts[c] * logp[c]) for c in range(C))
            num_nll += v
            den += 1
            den_abs += 1
        per.append(v)
        scale_terms.append(sc)
    out = {"per_element": per, "per_scale": scale_terms}
    if red == "none":
        return dict(out, loss=per, loss_scale=scale_terms)
    scale = _mp_sum(scale_terms)
    if red == "sum":
        return dict(out, loss=[_mp_sum(per)], loss_scale=[scale])
    # mean: class-index targets divide by sum of w[target] (non-ignored), probability
    # targets by the number of rows; with label smoothing torch reduces both terms with the
    # same denominator (LossNLL.cpp cross_entropy_loss_label_smoothing).
    if zr.dtype == np.int64 and ls != 0:
        v = (1 - ls) * mp_div(num_nll, den) + ls / C * mp_div(num_smooth, den)
    else:
        v = mp_div(num_nll, den)
    # a denominator that cancels (weights of both signs) scales the result's error too
    sc = mp_div(scale, abs(den))
    if cls(v) == "finite" and cls(sc) == "finite" and den != 0:
        sc = max(sc, abs(v) * den_abs / abs(den))
    return dict(out, loss=[v], loss_scale=[sc])


# ---------------------------------------------------------------------------------------
# Comparison

def ulp_of(v, dtype):
    """One ulp of the dtype at magnitude |v| (an mpf or a float)."""
    v = abs(float(v)) if not isinstance(v, float) else abs(v)
    if v == 0 or not math.isfinite(v):
        return TINY[dtype] if v == 0 else math.inf
    e = math.frexp(v)[1]                    # v = m 2^e, 0.5 <= m < 1
    return max(math.ldexp(1.0, e - 1) * ULP1[dtype], TINY[dtype])


def cls(v):
    if isinstance(v, mpmath.mpf):
        if mp.isnan(v):
            return "nan"
        if mp.isinf(v):
            return "+inf" if v > 0 else "-inf"
        return "finite"
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "+inf" if v > 0 else "-inf"
    return "finite"


def exact_cls(e, dtype):
    c = cls(e)
    if c != "finite":
        return c
    # a float32 reduction accumulates in float32 in torch but in double in maskloss: a sum
    # beyond FLT_MAX is Inf in the dtype's own arithmetic
    if abs(e) > FMAX[dtype] * (1 + ULP1[dtype] / 2):
        return "+inf" if e > 0 else "-inf"
    return "finite"


def flat_items(res):
    """[(output, flat index, value)] of a result."""
    items = []
    for name in ("loss", "per_element"):
        a = np.asarray(res[name], dtype=np.float64).ravel()
        items += [(name, i, float(v)) for i, v in enumerate(a)]
    return items


def compare(case, tres, mres, audit=False):
    """Compare torch's and maskloss's answers to one case, arbitrating with the exact value.

    Returns {'items': values compared, 'disagree': [arbitrated records], 'fail': [maskloss
    failures], 'closer': Counter, 'notes': [torch non-finite where maskloss is right],
    'audit': [maskloss error in ulps for every value, when audit is set or the case was
    arbitrated]}."""
    dtype = case["dtype"]
    out = {"items": 0, "disagree": [], "fail": [], "closer": Counter(), "notes": [],
           "audit": []}
    if "crash" in mres:
        out["fail"].append({"what": "crash", "torch": tres.get("error", "ok"),
                            "maskloss": mres["crash"]})
        return out
    te, me = "error" in tres, "error" in mres
    if te or me:
        if te and me:
            return out
        out["fail"].append({"what": "error", "torch": tres.get("error", "ok"),
                            "maskloss": mres.get("error", "ok"),
                            "code": mres.get("code")})
        return out
    for name in ("loss", "per_element"):
        ts, ms = np.asarray(tres[name]), np.asarray(mres[name])
        if ts.size != ms.size or (ts.size and ts.shape != ms.shape):
            out["fail"].append({"what": "shape", "output": name, "torch": list(ts.shape),
                                "maskloss": list(ms.shape)})
            return out
    if mres.get("shape") is not None and list(np.shape(tres["loss"])) != mres["shape"]:
        out["fail"].append({"what": "shape", "output": "loss(shape field)",
                            "torch": list(np.shape(tres["loss"])), "maskloss": mres["shape"]})
        return out
    titems, mitems = flat_items(tres), flat_items(mres)
    out["items"] = len(titems)
    pending = []
    for (name, i, t), (_, _, m) in zip(titems, mitems):
        if cls(t) != cls(m):
            pending.append((name, i, t, m, True))
        elif cls(t) == "finite" and \
                abs(t - m) > DISAGREE_ULPS * ulp_of(max(abs(t), abs(m)), dtype):
            pending.append((name, i, t, m, True))
        elif audit:
            pending.append((name, i, t, m, False))
    if case.get("allow_non_finite"):
        # non-finite inputs: torch is the reference for NaN/Inf; finite values that differ
        # are arbitrated only when the exact value is finite
        rest = []
        for name, i, t, m, disagree in pending:
            if cls(t) != cls(m):
                rec = {"what": "class", "output": name, "index": i, "torch": t,
                       "maskloss": m, "exact": mp.nan, "nonfinite_input": True}
                out["disagree"].append(rec)
                out["closer"]["torch"] += 1
                out["fail"].append(rec)
            elif disagree:
                rest.append((name, i, t, m, disagree))
        pending = rest
        audit = False
    if not any(p[4] for p in pending) and not audit:
        return out
    ex = exact_case(case)
    for name, i, t, m, disagree in pending:
        if case.get("allow_non_finite") and cls(ex[name][i]) != "finite":
            continue
        e = ex[name][i]
        scale = ex["loss_scale"][i] if name == "loss" else ex["per_scale"][i]
        rec = {"what": "value", "output": name, "index": i, "torch": t, "maskloss": m,
               "exact": e}
        ec = exact_cls(e, dtype)
        tc, mc = cls(t), cls(m)
        if disagree:
            out["disagree"].append(rec)
        if tc != mc:
            rec["what"] = "class"
            if mc == ec:
                out["closer"]["maskloss"] += 1
                out["notes"].append(rec)            # a torch artefact: not a failure
                if mc == "finite":
                    _audit(out, rec, e, scale, dtype, None)
            else:
                out["closer"]["torch" if tc == ec else "neither"] += 1
                out["fail"].append(rec)
            continue
        if tc != "finite":
            if ec != tc:                            # both non-finite, the exact value not
                rec["what"] = "class"
                out["audit"].append(dict(rec, both_wrong=True))
            continue
        if ec != "finite":
            # the exact value overflows the dtype while both are finite: the nearer one wins
            e = mp.mpf(FMAX[dtype] if e > 0 else -FMAX[dtype])
        err_t, err_m = abs(mp.mpf(t) - e), abs(mp.mpf(m) - e)
        rec["err_torch"], rec["err_maskloss"] = err_t, err_m
        u = ulp_of(max(abs(e), scale), dtype)
        rec["ulp"] = u
        _audit(out, rec, e, scale, dtype, err_t)
        if not disagree:
            continue
        if err_m < err_t:
            out["closer"]["maskloss"] += 1
        elif err_t < err_m:
            out["closer"]["torch"] += 1
        else:
            out["closer"]["equal"] += 1
        if err_m > err_t + SLACK_ULPS * u:
            out["fail"].append(rec)
    return out


def _audit(out, rec, e, scale, dtype, err_t):
    u = ulp_of(max(abs(e), scale), dtype)
    err_m = abs(mp.mpf(rec["maskloss"]) - e)
    out["audit"].append(dict(rec, ulps_maskloss=float(err_m / u),
                             ulps_torch=None if err_t is None else float(err_t / u)))


# ---------------------------------------------------------------------------------------
# Random cases

def f32r(rng, lo, hi):
    return float(np.float32(rng.uniform(lo, hi)))


SPECIAL_LOGITS = [0.0, 1e-8, 0.5, 1.0, 5.0, 10.0, 13.419898768799802, 16.6, 17.0, 20.0,
                  26.98, 36.7, 40.0, 88.0, 89.0, 100.0, 745.0, 1000.0, 9999.5, 1e4]


def gen_logits(rng, shape, z, profile):
    n = int(np.prod(shape, dtype=np.int64))
    zf = np.broadcast_to(np.asarray(z, dtype=np.float64), shape).ravel() if n else np.zeros(0)
    out = np.empty(n)
    for i in range(n):
        mode = profile if rng.random() < 0.7 else rng.choice(
            ["normal", "wide", "huge", "confident", "wrong", "special"])
        if mode == "normal":
            v = rng.normal(0, 3)
        elif mode == "wide":
            v = (10 ** rng.uniform(-8, 4)) * rng.choice([-1, 1])
        elif mode == "huge":
            v = rng.uniform(-1e4, 1e4)
        elif mode == "confident":     # the loss is tiny: right side, by a margin
            v = rng.uniform(3, 60) * (1 if zf[i] >= 0.5 else -1)
        elif mode == "wrong":
            v = rng.uniform(3, 100) * (-1 if zf[i] >= 0.5 else 1)
        else:
            v = rng.choice(SPECIAL_LOGITS) * rng.choice([-1, 1])
        out[i] = v
    return out.reshape(shape)


def gen_labels(rng, shape):
    mode = rng.choice(["binary", "binary", "soft", "mixed", "edge"])
    if mode == "binary":
        return (rng.random(shape) < 0.4).astype(np.float64)
    if mode == "soft":
        return rng.random(shape)
    if mode == "mixed":
        b = (rng.random(shape) < 0.4).astype(np.float64)
        s = rng.random(shape)
        return np.where(rng.random(shape) < 0.5, b, s)
    return rng.choice([0.0, 1.0, 0.5, 1e-3, 0.999, 0.1, 0.9], size=shape)


def gen_shape(rng, allow_scalar=True, big=False):
    if big:      # more than one 1024-element block of the reductions and fused kernels
        return (int(rng.integers(64, 130)), int(rng.choice([16, 17])))
    r = rng.random()
    N = int(rng.choice([0, 1, 1, 2, 3, 4, 5, 8, 13]))
    if rng.random() < 0.05:
        N = 0
    C = int(rng.choice([1, 2, 3, 4, 5, 7, 10, 16]))
    if allow_scalar and r < 0.05:
        return ()
    if r < 0.2:
        return (C,)
    if r < 0.9:
        return (N, C)
    return (N, C, int(rng.choice([1, 2, 3])))


def gen_weight_like(rng, shape, allow_negative=True):
    """A weight/mask broadcastable to shape (torch semantics), or a bad one now and then."""
    C = shape[-1] if shape else 1
    r = rng.random()
    if r < 0.3:
        return None, "none"
    def vals(sh):
        m = rng.choice(["mask", "pos", "zeros", "allzero", "neg"],
                       p=[0.3, 0.3, 0.25, 0.1, 0.05] if allow_negative else
                       [0.3, 0.35, 0.25, 0.1, 0.0])
        if m == "mask":
            return (rng.random(sh) < 0.6).astype(np.float64), m
        if m == "pos":
            return rng.uniform(0, 2, sh), m
        if m == "zeros":
            return np.where(rng.random(sh) < 0.4, 0.0, rng.uniform(0, 3, sh)), m
        if m == "allzero":
            return np.zeros(sh), m
        return rng.uniform(-1, 2, sh), m
    forms = ["full", "per_class", "scalar"]
    if len(shape) >= 2:
        forms += ["per_row", "one_row"]
    form = rng.choice(forms + ["bad"] if rng.random() < 0.05 else forms)
    if form == "full":
        sh = shape
    elif form == "per_class":
        sh = (C,)
    elif form == "scalar":
        sh = ()
    elif form == "per_row":
        sh = shape[:-1] + (1,)
    elif form == "one_row":
        sh = (1,) + shape[1:]
    else:
        sh = (C + 1,)          # not broadcastable
    v, m = vals(sh)
    return v, f"{form}/{m}"


def gen_elementwise(rng, kind, dtype, big=False):
    shape = gen_shape(rng, big=big)
    z = gen_labels(rng, shape)
    profile = rng.choice(["normal", "wide", "huge", "confident", "confident", "wrong",
                          "special"])
    x = gen_logits(rng, shape, z, profile)
    w, wtag = gen_weight_like(rng, shape)
    params = {}
    tag = [f"x:{profile}", f"w:{wtag}"]
    if kind == "bce":
        pw, pwtag = gen_weight_like(rng, shape, allow_negative=False)
        r = rng.random()
        if pw is not None and r < 0.25:
            # a number, not a tensor
            pw = rng.choice([0.0, 1.0, 2.0, 0.5, f32r(rng, 0, 5)])
            pwtag = "number"
        elif pw is not None and r < 0.3:
            pw = np.asarray(0.0)
            pwtag = "zero"
        if pw is not None:
            params["pos_weight"] = float(pw) if not isinstance(pw, np.ndarray) else \
                np.asarray(pw, dtype=NP_DTYPE[dtype])
        tag.append(f"pw:{pwtag}")
    elif kind == "focal":
        if rng.random() < 0.8:
            params["alpha"] = float(rng.choice([0.25, -1.0, 0.0, 1.0, 0.5, 0.75, -0.5, 2.0,
                                                1.5, f32r(rng, 0, 1)]))
        if rng.random() < 0.8:
            params["gamma"] = float(rng.choice([0.0, 1.0, 2.0, 3.0, 0.5, 1.5, 2.5, 5.0,
                                                f32r(rng, 0, 4)]))
    elif kind == "asl":
        for k, choices in (("gamma_neg", [0.0, 1.0, 2.0, 4.0, 0.5, 3.0]),
                           ("gamma_pos", [0.0, 1.0, 2.0, 0.5]),
                           ("clip", [0.0, 0.05, 0.1, 0.2, 0.01]),
                           ("eps", [1e-8, 0.0, 1e-4, 1e-6])):
            if rng.random() < 0.6:
                params[k] = float(rng.choice(choices))
    red_choices = {"bce": ["mean", "sum", "none", None],
                   "focal": ["mean", "sum", "none", None],
                   "asl": ["sum", "mean", "none", None]}[kind]
    red = red_choices[rng.integers(len(red_choices))]
    nd = NP_DTYPE[dtype]
    return {"kind": kind, "dtype": dtype, "x": np.asarray(x, dtype=nd),
            "z": np.asarray(z, dtype=nd),
            "w": None if w is None else np.asarray(w, dtype=nd), "params": params,
            "reduction": red,
            "tag": " ".join(tag)}


def gen_ce(rng, dtype, big=False):
    r = rng.random()
    C = int(rng.choice([1, 2, 3, 4, 5, 10, 17, 33]))
    N = int(rng.choice([0, 1, 2, 3, 4, 6, 9, 16]))
    if big:
        r, C, N = 0.5, int(rng.choice([5, 10])), int(rng.integers(150, 260))
    if r < 0.15:
        shape = (C,)
    elif r < 0.9:
        shape = (N, C)
    else:
        shape = (N, C, int(rng.choice([1, 2, 3])))
    tshape = (shape[0],) + shape[2:] if len(shape) >= 2 else ()
    prob = rng.random() < 0.3
    params = {}
    tags = []
    # targets
    if prob:
        pm = rng.choice(["softmax", "onehot", "soft0", "unnormalised", "zero_rows"])
        tags.append(f"t:prob/{pm}")
        zc = np.moveaxis(np.zeros(shape), 1 if len(shape) >= 2 else 0, -1)
        if pm == "softmax":
            e = np.exp(rng.normal(0, 2, zc.shape))
            zc = e / e.sum(-1, keepdims=True)
        elif pm == "onehot":
            idx = rng.integers(0, C, zc.shape[:-1])
            zc = np.eye(C)[idx]
        elif pm == "soft0":
            e = np.where(rng.random(zc.shape) < 0.5, 0.0, rng.random(zc.shape))
            s = e.sum(-1, keepdims=True)
            zc = np.where(s > 0, e / np.where(s > 0, s, 1), 0.0)
        elif pm == "unnormalised":
            zc = rng.random(zc.shape)
        else:
            zc = np.where(rng.random(zc.shape[:-1] + (1,)) < 0.5, 0.0, rng.random(zc.shape))
        z = np.moveaxis(zc, -1, 1 if len(shape) >= 2 else 0)
        target_rows = None
    else:
        z = rng.integers(0, C, tshape).astype(np.int64)
        target_rows = z
        tags.append("t:index")
    # logits, built row-wise with the class dim last
    cax = 1 if len(shape) >= 2 else 0
    xc_shape = np.moveaxis(np.zeros(shape), cax, -1).shape
    mode = rng.choice(["normal", "confident", "confident", "huge", "spread", "flat", "wide"])
    tags.append(f"x:{mode}")
    if mode == "normal":
        xc = rng.normal(0, 3, xc_shape)
    elif mode == "confident":      # the target's logit leads by a margin: tiny losses
        xc = rng.normal(0, 2, xc_shape)
        if target_rows is not None:
            tr = np.asarray(target_rows).reshape(xc_shape[:-1])
            flat = xc.reshape(-1, C)
            for k, t in enumerate(tr.ravel()):
                flat[k, t] = flat[k].max() + rng.uniform(4, 40)
        else:
            xc = xc + rng.uniform(4, 40) * np.moveaxis(z, cax, -1)
        base = rng.choice([0.0, 0.0, 100.0, 1e3, -1e3, 1e4 - 50])
        xc = xc + base
    elif mode == "huge":
        xc = 1e4 - rng.uniform(0, 30, xc_shape)
    elif mode == "spread":
        xc = rng.uniform(-1e4, 1e4, xc_shape)
    elif mode == "flat":
        xc = np.full(xc_shape, rng.normal(0, 10)) + rng.normal(0, 1e-6, xc_shape)
    else:
        xc = (10 ** rng.uniform(-8, 4, xc_shape)) * rng.choice([-1, 1], xc_shape)
    x = np.moveaxis(xc, -1, cax)
    # ignore_index
    if not prob and rng.random() < 0.35:
        ii = int(rng.choice([-100, -1, 0, 1, 2]))
        params["ignore_index"] = ii
        if ii < 0 and z.size:
            z = np.where(rng.random(z.shape) < 0.4, ii, z).astype(np.int64)
        tags.append(f"ii:{ii}")
    elif prob and rng.random() < 0.1:
        params["ignore_index"] = int(rng.choice([-1, -100, 1]))   # >= 0 is refused by torch
        tags.append(f"ii:{params['ignore_index']}")
    # label smoothing
    r = rng.random()
    if r < 0.45:
        pass
    elif r < 0.95:
        params["label_smoothing"] = float(rng.choice([0.0, 0.1, 0.05, 0.2, 0.5, 1.0,
                                                      f32r(rng, 0, 1)]))
    else:
        params["label_smoothing"] = float(rng.choice([-0.1, 1.5]))
    if "label_smoothing" in params:
        tags.append(f"ls:{params['label_smoothing']:g}")
    # class weights
    r = rng.random()
    w = None
    if r < 0.4:
        pass
    elif r < 0.6:
        w = rng.uniform(0, 2, C)
        tags.append("w:pos")
    elif r < 0.75:
        w = np.where(rng.random(C) < 0.4, 0.0, rng.uniform(0, 3, C))
        tags.append("w:zeros")
    elif r < 0.8:
        w = np.zeros(C)
        tags.append("w:allzero")
    elif r < 0.9 and not prob:
        # zero exactly on the classes that are targets: every kept target weighs 0
        w = rng.uniform(0.5, 2, C)
        w[np.unique(z[(z >= 0) & (z < C)])] = 0.0
        tags.append("w:zero_on_targets")
    elif r < 0.97:
        w = rng.uniform(-1, 2, C)
        tags.append("w:neg")
    else:
        w = rng.uniform(0, 2, C + 1)
        tags.append("w:bad_length")
    # an out-of-range target now and then
    if not prob and z.size and rng.random() < 0.03:
        z = z.copy()
        z.ravel()[0] = int(rng.choice([C, C + 3, -2]))
        tags.append("t:out_of_range")
    red = ["mean", "sum", "none", None][rng.integers(4)]
    nd = NP_DTYPE[dtype]
    return {"kind": "ce", "dtype": dtype, "x": x.astype(nd),
            "z": z if not prob else z.astype(nd),
            "w": None if w is None else w.astype(nd), "params": params, "reduction": red,
            "tag": " ".join(tags)}


# Cases written by hand: the defects known in issue 10, so that the test demonstrably
# finds them, plus edges a random draw rarely hits.
def fixed_cases():
    f32, f64 = np.float32, np.float64
    cases = []

    def add(kind, dtype, x, z, w=None, params=None, reduction=None, tag="fixed"):
        nd = NP_DTYPE[dtype]
        z = np.asarray(z, dtype=np.int64 if kind == "ce" and np.asarray(z).dtype.kind == "i"
                       else nd)
        cases.append({"kind": kind, "dtype": dtype, "x": np.asarray(x, dtype=nd), "z": z,
                      "w": None if w is None else np.asarray(w, dtype=nd),
                      "params": params or {}, "reduction": reduction, "tag": tag})

    # issue 10 #3: log-softmax of a confident, correct row
    add("ce", "float32", [[20, 10]], [0], tag="fixed:ce_small_loss")
    add("ce", "float32", [[10000, 9990]], [0], tag="fixed:ce_small_loss_huge")
    add("ce", "float64", [[40, 1, 2]], [0], reduction="none", tag="fixed:ce_small_loss")
    # issue 10 #4: sigmoid CE of an easy negative, and focal on top of it
    add("bce", "float64", [-13.419898768799802], [0.0], reduction="none",
        tag="fixed:bce_easy_negative")
    add("bce", "float32", [-10.0], [0.0], reduction="none", tag="fixed:bce_easy_negative")
    add("focal", "float64", [-26.98], [0.0], tag="fixed:focal_easy_negative")
    # issue 10 #6: torchvision alpha outside [0, 1]; torch CE NaN edge
    add("focal", "float32", [[0.5, -1.0]], [[1.0, 0.0]], params={"alpha": 2.0},
        reduction="sum", tag="fixed:focal_alpha_2")
    add("focal", "float64", [[0.5, -1.0]], [[1.0, 0.0]], params={"alpha": -0.5},
        tag="fixed:focal_alpha_negative")
    add("ce", "float32", [[1, 2, 3], [3, 2, 1]], [0, 0], w=[0, 1, 1],
        params={"label_smoothing": 0.1}, tag="fixed:ce_zero_weight_smoothing")
    add("ce", "float64", [[1, 2, 3]], [-100], params={"label_smoothing": 0.2},
        tag="fixed:ce_all_ignored_smoothing")
    add("ce", "float64", [[1, 2, 3]], [-100], tag="fixed:ce_all_ignored")
    # empty batches
    add("bce", "float32", np.zeros((0, 3)), np.zeros((0, 3)), tag="fixed:empty")
    add("ce", "float32", np.zeros((0, 3)), np.zeros(0, dtype=np.int64), tag="fixed:empty")
    add("ce", "float64", np.zeros((0, 3)), np.zeros((0, 3)), tag="fixed:empty_prob")
    add("focal", "float64", np.zeros((0, 3)), np.zeros((0, 3)), reduction="mean",
        tag="fixed:empty")
    add("asl", "float32", np.zeros((0, 3)), np.zeros((0, 3)), tag="fixed:empty")
    # pos_weight forms
    add("bce", "float64", [[0.5, -2.0], [3.0, -0.25]], [[1, 0], [1, 1]],
        params={"pos_weight": np.array([[2.0], [0.0]])}, tag="fixed:pos_weight_N1")
    add("bce", "float32", [[0.5, -2.0], [3.0, -0.25]], [[1, 0], [0.3, 1]],
        params={"pos_weight": np.array(3.0, dtype=f32)}, tag="fixed:pos_weight_0d")
    add("bce", "float64", [[0.5, -2.0], [3.0, -0.25]], [[1, 0], [0.3, 1]],
        params={"pos_weight": 0.0}, w=[[1, 0], [0, 0]], tag="fixed:pos_weight_0")
    add("bce", "float64", [0.5, -2.0], [1, 0], w=[[1.0, 0.5]], tag="fixed:weight_rank_up")
    add("bce", "float32", [0.5, -2.0], [1, 0], params={"pos_weight": np.array([[2.0]], dtype=f32)},
        tag="fixed:pos_weight_rank_up")
    add("bce", "float64", 7925.25, 0.0, params={"pos_weight": np.array([1.5])},
        tag="fixed:pos_weight_rank_up_0d")
    add("focal", "float64", [0.5, -2.0], [1, 0], w=[[1.0], [0.5]], tag="fixed:weight_rank_up")
    # torch ignores a negative label_smoothing (only > 0 smooths; > 1 raises)
    add("ce", "float64", [[1, 2, 3], [3, 2, 1]], [0, 2], params={"label_smoothing": -0.1},
        tag="fixed:ce_negative_smoothing")
    add("ce", "float32", [[1, 2, 3]], [[0.2, 0.3, 0.5]], params={"label_smoothing": -0.5},
        tag="fixed:ce_negative_smoothing_prob")
    add("ce", "float64", [[1, 2, 3]], [0], params={"label_smoothing": 1.5},
        tag="fixed:ce_smoothing_above_1")
    # non-finite logits (allow_non_finite): torch is the reference
    inf, nan = np.inf, np.nan
    add("ce", "float32", [[inf, nan, -21.5, -21.5]], [3], tag="fixed:ce_inf_and_nan_logit")
    add("ce", "float32", [[1.0, inf, -21.5]], [0], tag="fixed:ce_inf_logit")
    add("ce", "float64", [[1.0, -inf, -21.5]], [0], tag="fixed:ce_minus_inf_logit")
    add("bce", "float32", [-inf, -inf, inf, inf], [1, 0, 0.5, 1], reduction="none",
        tag="fixed:bce_inf_logits")
    add("focal", "float64", [-inf, -inf, inf, inf], [1, 0, 0.5, 1], reduction="none",
        tag="fixed:focal_inf_logits")
    add("asl", "float32", [inf, inf, -inf, -inf, nan], [1, 0, 1, 0, 1], reduction="none",
        tag="fixed:asl_inf_logits")
    for c in cases:
        if not np.all(np.isfinite(c["x"])):
            c["allow_non_finite"] = True
    del f64
    return cases


def gen_wire(rng, c):
    """Other encodings of the same values: masks as bool/uint8, class indices as int32,
    integer parameters as 0-d int32/int64 tensors, reduction names in capitals."""
    wire = {}
    w = c.get("w")
    if w is not None and np.all((w == 0) | (w == 1)) and rng.random() < 0.5:
        wire["w"] = str(rng.choice(["bool", "uint8"]))
    if c["z"].dtype == np.int64 and rng.random() < 0.3 and np.all(np.abs(c["z"]) < 2**31):
        wire["z"] = "int32"
    ints = {k: str(rng.choice(["int32", "int64"])) for k, v in c["params"].items()
            if k in ("gamma", "alpha", "gamma_neg", "gamma_pos", "ignore_index")
            and isinstance(v, (int, float)) and float(v).is_integer() and rng.random() < 0.3}
    if ints:
        wire["int_params"] = ints
    if rng.random() < 0.1:
        wire["upper"] = True
    if wire:
        c["wire"] = wire
        c["tag"] += " wire:" + ",".join(sorted(wire))


def inject_non_finite(rng, c):
    """NaN and infinite logits (and NaN soft labels), with allow_non_finite: both must
    propagate them the same way (torch is the reference; no exact value)."""
    x = c["x"].copy()
    if x.size == 0:
        return
    for _ in range(int(rng.integers(1, 3))):
        x.reshape(-1)[rng.integers(x.size)] = rng.choice([np.inf, -np.inf, np.nan])
    c["x"] = x
    if c["z"].dtype != np.int64 and rng.random() < 0.3:
        z = c["z"].copy()
        z.reshape(-1)[rng.integers(z.size)] = np.nan
        c["z"] = z
    c["allow_non_finite"] = True
    c["tag"] += " nonfinite"


def gen_case(seed, i):
    rng = np.random.default_rng([seed, i])
    kind = KINDS[i % 4]
    dtype = "float32" if (i // 4) % 2 == 0 else "float64"
    big = rng.random() < 0.012
    if kind == "ce":
        c = gen_ce(rng, dtype, big)
    else:
        c = gen_elementwise(rng, kind, dtype, big)
    if big:
        c["tag"] += " big"
    gen_wire(rng, c)
    if rng.random() < 0.03:
        inject_non_finite(rng, c)
    c["id"] = f"{seed}:{i}"
    return c


# ---------------------------------------------------------------------------------------
# Minimal inputs

def subset(case, keep):
    """The case restricted to the flat elements (elementwise kinds) or rows (ce) in keep,
    as a 1-D (or [k, C]) case with weights and pos_weight broadcast to it."""
    c = dict(case)
    c["params"] = dict(case["params"])
    if case["kind"] == "ce":
        xr, zr = _ce_rows(case)
        c["x"] = xr[keep]
        c["z"] = zr[keep]
        return c
    shape = case["x"].shape
    c["x"] = case["x"].reshape(-1)[keep]
    c["z"] = case["z"].reshape(-1)[keep]
    if case.get("w") is not None:
        c["w"] = np.ascontiguousarray(np.broadcast_to(case["w"], shape)).reshape(-1)[keep]
    pw = case["params"].get("pos_weight")
    if isinstance(pw, np.ndarray):
        c["params"]["pos_weight"] = np.ascontiguousarray(
            np.broadcast_to(pw, shape)).reshape(-1)[keep]
    return c


def signature(res):
    """What kind of failure: value/class, or an error mismatch and which side refused."""
    sig = set()
    for f in res["fail"]:
        if f["what"] == "error":
            sig.add(("error", f["torch"] == "ok"))
        else:
            sig.add((f["what"],))
    return sig


def evaluate(cli, cases, plain=False):
    reqs = [to_request(c, plain) for c in cases]
    mres = run_maskloss(cli, reqs)
    return [compare(c, torch_eval(c), m) for c, m in zip(cases, mres)], mres


def units(case):
    if case["kind"] == "ce":
        return _ce_rows(case)[0].shape[0]
    return case["x"].size


def minimize(cli, case, res, budget):
    """The smallest subset of elements (rows for cross_entropy) that fails the same way:
    first the single element behind a failing value, then greedy halving and one by one.
    Every candidate is re-run (as the plain JSON request that the report prints)."""
    sig = signature(res)
    if ("shape",) in sig:
        return case, res

    def still_fails(c):
        budget[0] -= 1
        r, _ = evaluate(cli, [c], plain=True)
        return r[0] if signature(r[0]) & sig else None

    singles = [f["index"] for f in res["fail"] if f["what"] in ("value", "class") and (
        f["output"] == "per_element" or case.get("reduction") == "none")]
    if case["kind"] == "ce" and case["x"].ndim == 1:
        singles = []
    for idx in list(dict.fromkeys(singles))[:3]:
        c = subset(case, [idx])
        r = still_fails(c)
        if r:
            return c, r
    keep = list(range(units(case)))
    cur, cur_res = case, res
    chunk = max(1, len(keep) // 2)
    while len(keep) > 1 and budget[0] > 0:
        progressed = False
        for start in range(0, len(keep), chunk):
            trial = keep[:start] + keep[start + chunk:]
            if not trial:
                continue
            c = subset(case, trial)
            r = still_fails(c)
            if r:
                keep, cur, cur_res, progressed = trial, c, r, True
                break
            if budget[0] <= 0:
                break
        if not progressed:
            if chunk == 1:
                break
            chunk = max(1, chunk // 2)
        else:
            chunk = min(chunk, max(1, len(keep) // 2))
    return cur, cur_res


# ---------------------------------------------------------------------------------------
# Reporting

def fmt(v):
    if isinstance(v, mpmath.mpf):
        return mpmath.nstr(v, 20)
    return repr(v)


def describe_fail(f):
    if f["what"] == "error":
        t = "accepts" if f["torch"] == "ok" else "raises: " + f["torch"]
        m = "accepts" if f["maskloss"] == "ok" else f"refuses ({f['code']}): {f['maskloss']}"
        return f"error mismatch: torch {t}; maskloss {m}"
    if f["what"] == "shape":
        return f"shape mismatch on {f['output']}: torch {f['torch']}, maskloss {f['maskloss']}"
    if f["what"] == "crash":
        return f"maskloss crashed or hung ({f['maskloss']}); torch: {f['torch']}"
    s = (f"{f['output']}[{f['index']}]: maskloss {fmt(f['maskloss'])}, torch {fmt(f['torch'])}, "
         f"exact {fmt(f['exact'])}")
    if "err_maskloss" in f:
        e = f["exact"]
        def err(d):
            rel = mpmath.nstr(d / abs(e), 3) if e != 0 else mpmath.nstr(d, 3)
            return f"{rel} rel ({float(d / f['ulp']):.3g} ulp)"
        s += f"; error maskloss {err(f['err_maskloss'])}, torch {err(f['err_torch'])}"
    elif f.get("nonfinite_input"):
        s = (f"{f['output']}[{f['index']}]: maskloss {fmt(f['maskloss'])}, torch "
             f"{fmt(f['torch'])} (NaN/Inf/finite disagree on a non-finite input; torch is "
             f"the reference)")
    else:
        s += " (NaN/Inf/finite disagree)"
    return s


def regime(case):
    """Where a one-element (one-row) case lies: label, logit, parameters."""
    if units(case) != 1:
        return ""
    p = case["params"]
    if case["kind"] == "ce":
        xr, zr = _ce_rows(case)
        row = xr[0].astype(np.float64)
        if zr.dtype == np.int64:
            t = int(zr[0])
            if 0 <= t < row.size:
                others = np.delete(row, t)
                margin = row[t] - (others.max() if others.size else -np.inf)
                return f"target margin {margin:.3g}, max |x| {np.abs(row).max():.3g}"
        return f"probability target, max |x| {np.abs(row).max():.3g}"
    z, x = float(case["z"].reshape(-1)[0]), float(case["x"].reshape(-1)[0])
    lab = "z=0" if z == 0 else "z=1" if z == 1 else f"soft z={z:.3g}"
    parts = [lab, f"x={x:.4g}"]
    for k in ("pos_weight", "alpha", "gamma", "gamma_neg", "gamma_pos", "clip", "eps"):
        if k in p:
            v = p[k]
            v = float(np.asarray(v).reshape(-1)[0]) if isinstance(v, np.ndarray) else v
            parts.append(f"{k}={v:g}")
    return " ".join(parts)


def cause(case, f):
    """A coarse grouping key for the report."""
    if f["what"] == "crash":
        return f"{case['kind']} crash"
    if f["what"] in ("error", "shape"):
        p = case["params"]
        extra = ""
        if case["kind"] == "focal" and not (0 <= p.get("alpha", 0.25) <= 1
                                            or p.get("alpha") == -1):
            extra = " alpha outside [0,1]"
        return f"{case['kind']} {f['what']} mismatch{extra}"
    what = "accuracy" if f["what"] == "value" else (
        "NaN/Inf on non-finite input" if f.get("nonfinite_input") else "NaN/Inf/finite")
    if case["kind"] == "ce":
        targets = "probability targets" if case["z"].dtype != np.int64 else "class-index targets"
        return f"ce {case['dtype']} {what} ({targets})"
    return f"{case['kind']} {case['dtype']} {what} ({f['output']})"


def worst_fail(r):
    return max(r["fail"], key=lambda f: float(f["err_maskloss"] / f["ulp"])
               if "err_maskloss" in f else math.inf)


def single_value_case(case, rec):
    """The one element (row) behind a per-element value, for the audit listing."""
    if rec["output"] == "per_element" or case.get("reduction") == "none":
        if case["kind"] != "ce" or case["x"].ndim > 1:
            return subset(case, [rec["index"]])
    return case


def short_request(case, case_id, limit=1000):
    text = json.dumps(to_request(case, plain=True), separators=(",", ":"))
    return text if len(text) <= limit else f"(long: --case {case_id} --verbose)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--maskloss", default="build/maskloss", help="the maskloss command")
    ap.add_argument("--quick", action="store_true", help="a few hundred cases (< 60 s)")
    ap.add_argument("--cases", type=int, default=None, help="random cases (default 6000, "
                    "400 with --quick)")
    ap.add_argument("--seed", type=int, default=20261128)
    ap.add_argument("--case", default=None, help="re-run one case: SEED:INDEX or fixed:K")
    ap.add_argument("--audit", action=argparse.BooleanOptionalAction, default=None,
                    help="also compute the exact value of every value (default: on "
                    "without --quick) and list where maskloss is > 4 ulp from it although "
                    "torch is no closer (not failures)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--dump", default=None, help="write every failure (minimal request, "
                    "values) to this file as JSON lines")
    ap.add_argument("--minimize-budget", type=int, default=600,
                    help="maskloss runs spent on shrinking failures")
    args = ap.parse_args()
    t0 = time.time()
    ncases = args.cases if args.cases is not None else (400 if args.quick else 6000)
    audit = args.audit if args.audit is not None else not args.quick

    fixed = fixed_cases()
    for k, c in enumerate(fixed):
        c["id"] = f"fixed:{k}"
    if args.case:
        if args.case.startswith("fixed:"):
            cases = [fixed[int(args.case.split(":")[1])]]
        else:
            s, i = args.case.split(":")
            cases = [gen_case(int(s), int(i))]
    else:
        cases = fixed + [gen_case(args.seed, i) for i in range(ncases)]

    mres = run_maskloss(args.maskloss, [to_request(c) for c in cases])
    results = []
    for c, m in zip(cases, mres):
        t = torch_eval(c)
        results.append(compare(c, t, m, audit=audit))
        if args.verbose:
            print(c["id"], c["kind"], c["dtype"], c["tag"], "| torch:",
                  t.get("error", t.get("loss")), "| maskloss:", m.get("error", m.get("loss")))

    stats = defaultdict(Counter)
    closer = Counter()
    failing, notes = [], []
    # (kind, dtype, output) -> values audited, maskloss > 4 ulp, torch > 4 ulp, worst of each
    worst = defaultdict(lambda: [0, 0, 0, 0.0, 0.0])
    suspicious = defaultdict(list)
    refused = Counter()
    for c, r in zip(cases, results):
        st = stats[(c["kind"], c["dtype"])]
        st["cases"] += 1
        st["items"] += r["items"]
        st["disagree_cases"] += bool(r["disagree"] or r["fail"])
        st["disagree_items"] += len(r["disagree"])
        st["maskloss_closer"] += r["closer"]["maskloss"]
        st["torch_closer"] += r["closer"]["torch"]
        st["fail_cases"] += bool(r["fail"])
        closer.update(r["closer"])
        if r["items"] == 0 and not r["fail"]:
            refused[(c["kind"], c["dtype"])] += 1
        if r["fail"]:
            failing.append((c, r))
        if r["notes"]:
            notes.append((c, r))
        failed_at = {(f.get("output"), f.get("index")) for f in r["fail"]}
        for a in r["audit"]:
            key = (c["kind"], c["dtype"], a["output"])
            if a.get("both_wrong"):
                suspicious[(c["kind"], c["dtype"])].append((c, a))
                continue
            wk = worst[key]
            wk[0] += 1
            wk[1] += a["ulps_maskloss"] > SLACK_ULPS
            wk[3] = max(wk[3], a["ulps_maskloss"])
            if a["ulps_torch"] is not None:
                wk[2] += a["ulps_torch"] > SLACK_ULPS
                wk[4] = max(wk[4], a["ulps_torch"])
            if (a["output"], a["index"]) not in failed_at and a["ulps_maskloss"] > SLACK_ULPS:
                suspicious[(c["kind"], c["dtype"])].append((c, a))

    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}; maskloss "
          f"{args.maskloss}; seed {args.seed}; {len(cases)} cases ({len(fixed)} fixed)"
          f"{'; audit on' if audit else ''}")
    print(f"{'loss':6} {'dtype':8} {'cases':>6} {'both refuse':>11} {'values':>7} "
          f"{'disagree':>9} {'(values)':>9} {'ml closer':>10} {'torch closer':>13} "
          f"{'failed':>7}")
    for kind in KINDS:
        for dtype in ("float32", "float64"):
            st = stats[(kind, dtype)]
            print(f"{kind:6} {dtype:8} {st['cases']:6} {refused[(kind, dtype)]:11} "
                  f"{st['items']:7} {st['disagree_cases']:9} {st['disagree_items']:9} "
                  f"{st['maskloss_closer']:10} {st['torch_closer']:13} {st['fail_cases']:7}")
    print(f"arbitrated values: maskloss closer {closer['maskloss']}, torch closer "
          f"{closer['torch']}, equally close {closer['equal']}, neither {closer['neither']}")
    if audit:
        print(f"\naudit: error against the exact value in ulps of the dtype (for reductions "
              f"relative to sum|terms|/denominator; torch's float32 reductions round to "
              f"float32): values more than {SLACK_ULPS} ulp off, and the worst")
        print(f"{'loss':6} {'dtype':8} {'output':12} {'values':>7} {'ml > 4':>7} "
              f"{'torch > 4':>9} {'ml worst':>10} {'torch worst':>11}")
        for (kind, dtype, out), (n, nm, nt, wm, wt) in sorted(worst.items()):
            print(f"{kind:6} {dtype:8} {out:12} {n:7} {nm:7} {nt:9} {wm:10.3g} {wt:11.3g}")
    if notes:
        print(f"\ntorch non-finite where the exact value is finite and maskloss is finite "
              f"(not failures): {len(notes)} cases")
        for c, r in notes[:8]:
            rec = r["notes"][0]
            a = next((a for a in r["audit"] if a["output"] == rec["output"]
                      and a["index"] == rec["index"]), None)
            extra = f"; maskloss off by {a['ulps_maskloss']:.3g} ulp" if a else ""
            print(f"  {c['id']} {c['kind']} {c['dtype']}: {describe_fail(rec)}{extra}")
            print(f"    {short_request(single_value_case(c, rec), c['id'])}")
    if audit and suspicious:
        total = sum(len(v) for v in suspicious.values())
        print(f"\naudit: {total} values where maskloss is more than {SLACK_ULPS} ulp from the "
              f"exact value although torch is no closer (not failures), worst per loss:")
        for key, lst in sorted(suspicious.items()):
            # single values first (short requests), then by error
            lst.sort(key=lambda ca: (units(single_value_case(*ca)) > 1,
                                     -(ca[1].get("ulps_maskloss") or math.inf)))
            print(f"  {key[0]} {key[1]}: {len(lst)} values")
            for c, a in lst[:4]:
                if a.get("both_wrong"):
                    what = (f"both {cls(a['torch'])}, exact {fmt(a['exact'])}")
                else:
                    what = (f"maskloss {fmt(a['maskloss'])} ({a['ulps_maskloss']:.3g} ulp), "
                            f"torch {fmt(a['torch'])} ({a['ulps_torch']:.3g} ulp), exact "
                            f"{fmt(a['exact'])}")
                print(f"    {c['id']} {a['output']}[{a['index']}]: {what}")
                print(f"      {short_request(single_value_case(c, a), c['id'])}")

    if failing:
        budget = [args.minimize_budget]
        groups = defaultdict(list)
        for c, r in failing:
            mc, mr = minimize(args.maskloss, c, r, budget) if budget[0] > 0 else (c, r)
            f = worst_fail(mr) if mr["fail"] else worst_fail(r)
            groups[cause(mc, f)].append((c, r, mc, f))
        if args.dump:
            with open(args.dump, "w") as fh:
                for g, lst in groups.items():
                    for c, r, mc, f in lst:
                        fh.write(json.dumps({
                            "group": g, "id": c["id"], "tag": c["tag"],
                            "request": to_request(mc, plain=True),
                            "fail": {k: (fmt(v) if isinstance(v, mpmath.mpf) else v)
                                     for k, v in f.items()},
                            "ulps_maskloss": float(f["err_maskloss"] / f["ulp"])
                            if "err_maskloss" in f else None,
                            "ulps_torch": float(f["err_torch"] / f["ulp"])
                            if "err_torch" in f else None}) + "\n")
        print(f"\nmaskloss failures: {len(failing)} cases, {len(groups)} groups "
              f"(each with its minimal input as a maskloss request)")
        for g, lst in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            print(f"\n== {g}: {len(lst)} cases")
            for c, r, mc, f in lst:
                where = regime(mc)
                print(f"- case {c['id']} [{c['tag']}] ({len(r['fail'])} failing values)"
                      f"{'; minimal: ' + where if where else ''}")
                print(f"  {describe_fail(f)}")
                print(f"  minimal: {json.dumps(to_request(mc, plain=True), separators=(',', ':'))}")
    nfail = len(failing)
    print(f"\n{time.time() - t0:.1f} s")
    print(f"{len(cases) - nfail} passed, {nfail} failed")
    return 1 if nfail else 0


if __name__ == "__main__":
    sys.exit(main())
