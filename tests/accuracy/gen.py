#!/usr/bin/env python3
"""
gen.py -- the facts of the accuracy suite (tests/data/accuracy.json): per-element losses of
every loss family, float32 and float64, on adversarial inputs, evaluated exactly.

    /usr/bin/python3 tests/accuracy/gen.py            # rewrites tests/data/accuracy.json

It needs Debian's python3-mpmath, python3-numpy, python3-torch (1.13) and
python3-torchvision; `make test` needs none of them: tests/test_accuracy.c only reads
the data file, evaluates every case through ml_eval (general and fused path) and applies the
bound below.

What a case is
--------------
One element (one row of classes for the softmax family) of one catalogue loss, in one
dtype, with its inputs and parameters as values of that dtype (float32 inputs are written
as the doubles that hold them exactly). The inputs are adversarial: logits with |x| from
1e-8 to 1e4, margins that make the loss tiny (easy negatives x = -10, -13.42, -26.98, -80
with label 0, easy positives), probabilities at and beyond Keras' clip, labels 0, 1 and
soft, softmax rows with a dominant logit, and the edges of every parameter
(label_smoothing, pos_weight, gamma, alpha, ASL's gammas, clip and eps, huber delta,
from_logits both ways, ignore_index, class weights).

The exact value ("exact", and "ref" rounded to the dtype)
--------------------------------------------------------
The framework's formula (kernels.h cites each source; the functions below follow the
frameworks' operation order) evaluated in exact arithmetic (mpmath, 1200 bits, checked
against 2400 bits) on the exact inputs. What the framework fixes in the dtype is an input
of the formula, not an operation of it:
  * parameters and constants are values of the dtype (the framework converts them to the
    tensor's dtype): Keras' epsilon 1e-7 and its clip 1 - 1e-7 (0.99999988 in float32),
    TF log_loss's epsilon, ASL's eps and clip, gamma, alpha, pos_weight, delta, torch's
    (1 - ls) and ls / C factors;
  * smoothed labels are the tensor the framework materialises before the formula runs,
    y * (1 - ls) + ls / K (binary: + 0.5 ls), rounded in the dtype operation by operation
    (TF, Keras and maskloss compute it the same way; the generator checks it).
Every other operation is exact. "ref" is that value rounded to nearest-even in the dtype;
"exact" is the value with 25 significant digits, for people.

Conditioning (the rule, per case; "kappa" and "cond")
-----------------------------------------------------
The framework's own formula is a sequence of operations on tensors (multiplications,
subtractions, log, exp, sigmoid, log_sigmoid, log_softmax, softmax_cross_entropy ...; each
framework primitive counts as one operation). Evaluated in the dtype with every
operation correctly rounded, operation k commits a relative error of at most u = 2^-24
(2^-53) wherever its result is not exact, and the loss moves by a_k times that, where
a_k = |t_k * dloss/dt_k / loss| is the amplification of intermediate t_k (measured by
perturbing t_k alone in the exact evaluation). kappa is the sum of a_k over the
operations that do round in that evaluation, so kappa * u bounds, to first order, the
relative error of the formula as the framework writes it. Then:
  * kappa <= 4: the formula is well-conditioned at that input (cond "well"). Written as
    the framework writes it, it is within about 4 ulp, so maskloss must be within 4 ulp of
    "ref".
  * kappa > 4: the formula amplifies the rounding of some intermediate (cancellation:
    x - x*z with a soft label, (1 - z) x - log_sigmoid(x) for an easy negative, log(1 - o)
    for a small o, 1 - sigmoid(x) near 1, 1 - y x at the hinge ...) (cond "ill"). maskloss
    must be no worse than the framework's own float computation ("fw", below): within
    max(4, min(kappa, 16), 2 * fw_ulp) ulp of "ref", fw_ulp being the distance of "fw"
    from "ref". The factor 2 is the one between a correctly rounded and a faithful (1 ulp)
    evaluation of the amplified intermediate: torch, numpy and maskloss all evaluate their
    functions faithfully, and an ill-conditioned formula turns that difference into a
    factor of up to 2 between two honest evaluations. min(kappa, 16): where the formula's
    own guarantee is that small, what the framework happened to get is luck as much as
    method. (tests/test_accuracy.c applies the bounds.)
A loss that is exactly 0 where a perturbation makes it non-zero, or whose perturbation
is not finite, has kappa infinite (written 1e300).

The framework's own float computation ("fw", "fw_src")
------------------------------------------------------
"torch": for the PyTorch-based losses (torch BCE and cross_entropy, torchvision's focal
loss, ASL, whose code is torch operations: transcribed here operation for operation), the
real torch 1.13 / torchvision 0.14 in the dtype. Its BCE is the older max_val form of
Loss.cpp, log(exp(-m) + exp(-x - m)), not the log_sigmoid form the conditioning analyses:
its number is the framework's own all the same.
"numpy": for TensorFlow and Keras (not installed), their formula operation by operation in
numpy's float32/float64 (the same code as the exact evaluation; sigmoid as
1 / (1 + exp(-x)), the fused softmax cross-entropy as TF's kernel computes it).
"""
import argparse
import json
import math
import sys
import time

import mpmath
import numpy as np
from mpmath import mp, mpf

try:
    import torch
    import torch.nn.functional as F
    import torchvision
except ImportError:  # pragma: no cover - the data file records which comparator ran
    torch = None

# ---- dtypes: (precision bits, exponent of the smallest subnormal, overflow exponent) ----

DTYPES = {"float32": (24, -149, 128), "float64": (53, -1074, 1024)}
KAPPA_WELL = 4.0
REF_PREC, CHECK_PREC, PERTURB_PREC = 1200, 2400, 256
DELTA = mpf(2) ** -100


def rnd(v, dt):
    """v rounded to nearest-even in dtype dt (an exact mpf), +-inf on overflow."""
    if not mpmath.isfinite(v) or v == 0:
        return v
    p, emin, emax = DTYPES[dt]
    sign, man, exp, bc = v._mpf_
    e = exp + bc - 1  # floor(log2 |v|)
    q = max(e - p + 1, emin)
    shift = exp - q
    if shift >= 0:
        n = man << shift
    else:
        s = -shift
        n = man >> s
        rem = man & ((1 << s) - 1)
        half = 1 << (s - 1)
        if rem > half or (rem == half and (n & 1)):
            n += 1
    r = mpmath.ldexp(mpf(n), q)
    if r >= mpmath.ldexp(mpf(1), emax):
        r = mpmath.inf
    return -r if sign else r


def to_dt(x, dt):
    """A Python number as the dtype's value, as the Python float holding it."""
    return float(np.float32(x)) if dt == "float32" else float(x)


def is_dt(x, dt):
    return to_dt(x, dt) == x


# ---- one evaluation of a formula -------------------------------------------------------


class Ev:
    """Evaluates a formula: mode "exact" (every operation exact at mp.prec; operation number
    `target` multiplied by 1 + DELTA), "round" (every operation correctly rounded to the
    dtype; `rounded[k]` says whether operation k rounded) or "numpy" (every operation in
    numpy's float32 or float64, the elementary functions those of numpy: TensorFlow and Keras
    as the float computation of their formula; their fused softmax cross-entropy as TF's
    kernel computes it)."""

    def __init__(self, dt, mode, target=-1):
        self.dt, self.mode, self.target = dt, mode, target
        self.t = np.float32 if dt == "float32" else np.float64
        self.np = mode == "numpy"
        self.n = 0
        self.rounded = []

    def op(self, v):
        k = self.n
        self.n += 1
        if self.np:
            return V(self.t(v), self)
        if self.mode == "round":
            r = rnd(v, self.dt)
            self.rounded.append(r != v)
            return V(r, self)
        if k == self.target:
            v = v * (1 + DELTA)
        return V(v, self)

    def inp(self, x):
        """An input: a value of the dtype."""
        return V(self.t(x) if self.np else mpf(x), self)

    def c(self, x):
        """A framework constant or parameter: x rounded to the dtype (no operation)."""
        return V(self.t(x) if self.np else rnd(mpf(x), self.dt), self)

    def val(self, o):
        if isinstance(o, V):
            return o.v
        if self.np:
            return self.t(o)
        m = mpf(o)
        assert rnd(m, self.dt) == m, "inexact literal %r: use Ev.c" % (o,)
        return m

    # Elementary functions, each one operation.
    def exp(self, a):
        return self.op(np.exp(a.v) if self.np else mpmath.exp(a.v))

    def log(self, a):
        return self.op(np.log(a.v) if self.np else mpmath.log(a.v))

    def log1p(self, a):
        return self.op(np.log1p(a.v) if self.np else mpmath.log1p(a.v))

    def pow(self, a, g):
        g = self.val(g)
        if self.np:
            return self.op(np.power(a.v, g))
        if a.v == 0:
            return self.op(mpf(1) if g == 0 else mpf(0))
        if a.v < 0 and g != int(g):
            return self.op(mpmath.nan)
        return self.op(mpmath.power(a.v, g))

    def sigmoid(self, a):
        if self.np:
            one = self.t(1)
            return self.op(one / (one + np.exp(-a.v)))
        return self.op(1 / (1 + mpmath.exp(-a.v)))

    def log_sigmoid(self, a):
        x = a.v
        if self.np:
            return self.op(np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x))))
        return self.op(-mpmath.log1p(mpmath.exp(-x)) if x >= 0 else x - mpmath.log1p(mpmath.exp(x)))

    def _log_softmax(self, xs):
        if self.np:
            m = max(xs)
            shifted = [x - m for x in xs]
            log_s = np.log(self.sum([np.exp(v) for v in shifted]))
            return [v - log_s for v in shifted]
        m = max(xs)
        log_s = mpmath.log(mpmath.fsum(mpmath.exp(x - m) for x in xs))
        return [(x - m) - log_s for x in xs]

    def log_softmax(self, row):
        return [self.op(v) for v in self._log_softmax([a.v for a in row])]

    def softmax_xent(self, y, row):
        """tf.nn.softmax_cross_entropy_with_logits: one fused op (TF's kernel: the labels
        times log(sum exp(x - max)) - (x - max), summed)."""
        if self.np:
            m = max(a.v for a in row)
            shifted = [a.v - m for a in row]
            log_s = np.log(self.sum([np.exp(v) for v in shifted]))
            return self.op(self.sum([yc.v * (log_s - v) for yc, v in zip(y, shifted)]))
        lp = self._log_softmax([a.v for a in row])
        return self.op(-mpmath.fsum(yc.v * l for yc, l in zip(y, lp)))

    def sparse_xent(self, label, row):
        """tf.nn.sparse_softmax_cross_entropy_with_logits: one fused op."""
        if self.np:
            return self.op(-self._log_softmax([a.v for a in row])[label])
        return self.op(-self._log_softmax([a.v for a in row])[label])

    def sum(self, xs):
        acc = xs[0]
        for t in xs[1:]:
            acc = acc + t
        return acc

    # Selections: exact.
    def zero(self):
        return self.inp(0)

    def maximum(self, a, b):
        b = b if isinstance(b, V) else self.c(b)
        return a if a.v >= b.v else b

    def minimum(self, a, b):
        b = b if isinstance(b, V) else self.c(b)
        return a if a.v <= b.v else b


class V:
    """A value inside a formula; arithmetic is one operation of its Ev."""

    __slots__ = ("v", "e")

    def __init__(self, v, e):
        self.v, self.e = v, e

    def __add__(self, o):
        return self.e.op(self.v + self.e.val(o))

    def __radd__(self, o):
        return self.e.op(self.e.val(o) + self.v)

    def __sub__(self, o):
        return self.e.op(self.v - self.e.val(o))

    def __rsub__(self, o):
        return self.e.op(self.e.val(o) - self.v)

    def __mul__(self, o):
        return self.e.op(self.v * self.e.val(o))

    def __rmul__(self, o):
        return self.e.op(self.e.val(o) * self.v)

    def __truediv__(self, o):
        return self.e.op(self.v / self.e.val(o))

    def __neg__(self):
        return V(-self.v, self.e)

    def __abs__(self):
        return V(abs(self.v), self.e)

    def __ge__(self, o):
        return self.v >= self.e.val(o)

    def __gt__(self, o):
        return self.v > self.e.val(o)

    def __lt__(self, o):
        return self.v < self.e.val(o)


# ---- label smoothing: an input of the formula, rounded as the framework rounds it --------


def smooth(y, ls, k, dt, torch_style=False):
    """y * (1 - ls) + ls / k in the dtype (k = 2 with ls / 2 = 0.5 ls for binary labels).
    TF and Keras: (1 - ls) from the Python double, ls converted to the dtype and then divided
    by k in the dtype; torch: both factors from doubles. maskloss: 1 - fl(ls) and fl(ls) / k
    in the dtype. The first factor must agree between the two (checked); the second is taken
    as the framework computes it."""
    c1 = rnd(mpf(1 - ls), dt)
    assert c1 == rnd(1 - rnd(mpf(ls), dt), dt), "label_smoothing %r: (1 - ls) ambiguous" % ls
    c2 = rnd(mpf(ls / k), dt) if torch_style else rnd(rnd(mpf(ls), dt) / k, dt)
    return [float(rnd(rnd(mpf(v) * c1, dt) + c2, dt)) for v in y]


# ---- the formulas, in each framework's operation order ---------------------------------


def tf_sigmoid_xent(e, z, x):
    # nn_impl.sigmoid_cross_entropy_with_logits
    relu = x if x >= 0 else e.zero()
    neg_abs = -x if x >= 0 else x
    return relu - x * z + e.log1p(e.exp(neg_abs))


def f_tf_sce(e, c):
    return tf_sigmoid_xent(e, c["z"][0], c["x"][0])


def f_tfnn_weighted(e, c):
    # nn_impl.weighted_cross_entropy_with_logits_v2
    z, x = c["z"][0], c["x"][0]
    q = e.c(c["params"]["pos_weight"])
    log_weight = 1 + (q - 1) * z
    return (1 - z) * x + log_weight * (e.log1p(e.exp(-abs(x))) + e.maximum(-x, 0))


def f_tf_log_loss(e, c):
    z, p = c["z"][0], c["x"][0]
    eps = e.c(c["params"].get("epsilon", 1e-7))
    return -(z * e.log(p + eps)) - (1 - z) * e.log(1 - p + eps)


def f_tf_mse(e, c):
    d = c["x"][0] - c["z"][0]
    return d * d


def f_tf_absdiff(e, c):
    return abs(c["x"][0] - c["z"][0])


def f_tf_huber(e, c):
    delta = e.c(c["params"].get("delta", 1.0))
    a = abs(c["x"][0] - c["z"][0])
    q = e.minimum(a, delta)
    lin = a - q
    return 0.5 * (q * q) + delta * lin


def f_tf_hinge(e, c):
    y = 2 * c["z"][0] - 1
    return e.maximum(1 - y * c["x"][0], 0)


def f_tf_cwl(e, c):
    return c["x"][0]


def torch_bce(e, z, x, pw=None):
    # ATen Loss.cpp binary_cross_entropy_with_logits (the log_sigmoid form)
    if pw is None:
        return (1 - z) * x - e.log_sigmoid(x)
    log_weight = (pw - 1) * z + 1
    return (1 - z) * x - log_weight * e.log_sigmoid(x)


def f_torch_bce(e, c):
    pw = c["params"].get("pos_weight")
    return torch_bce(e, c["z"][0], c["x"][0], None if pw is None else e.c(pw))


def f_tv_focal(e, c):
    # torchvision/ops/focal_loss.py sigmoid_focal_loss
    z, x = c["z"][0], c["x"][0]
    alpha = c["params"].get("alpha", 0.25)
    gamma = e.c(c["params"].get("gamma", 2.0))
    p = e.sigmoid(x)
    ce = torch_bce(e, z, x)
    p_t = p * z + (1 - p) * (1 - z)
    loss = ce * e.pow(1 - p_t, gamma)
    if alpha >= 0:
        a = e.c(alpha)
        alpha_t = a * z + (1 - a) * (1 - z)
        loss = alpha_t * loss
    return loss


def f_asl(e, c):
    # Alibaba-MIIL/ASL src/loss_functions/losses.py AsymmetricLoss.forward, one element
    z, x = c["z"][0], c["x"][0]
    prm = c["params"]
    gn, gp = prm.get("gamma_neg", 4), prm.get("gamma_pos", 1)
    clip, eps = prm.get("clip", 0.05), e.c(prm.get("eps", 1e-8))
    xs_pos = e.sigmoid(x)
    xs_neg = 1 - xs_pos
    if clip > 0:
        xs_neg = e.minimum(xs_neg + e.c(clip), 1)
    los_pos = z * e.log(e.maximum(xs_pos, eps))
    los_neg = (1 - z) * e.log(e.maximum(xs_neg, eps))
    loss = los_pos + los_neg
    if gn > 0 or gp > 0:
        pt = xs_pos * z + xs_neg * (1 - z)
        g = e.c(gp) * z + e.c(gn) * (1 - z)
        loss = loss * e.pow(1 - pt, g)
    return -loss


def keras_bce_probs(e, y, p, keras2):
    eps = e.c(1e-7)
    hi = e.c(1 - 1e-7)
    o = e.minimum(e.maximum(p, eps), hi)  # clip_by_value
    if keras2:
        bce = y * e.log(o + eps)
        bce = bce + (1 - y) * e.log(1 - o + eps)
    else:
        bce = y * e.log(o)
        bce = bce + (1 - y) * e.log(1 - o)
    return -bce


def f_keras_bce(e, c):
    y, x = c["z"][0], c["x"][0]
    if c["params"].get("from_logits"):
        return tf_sigmoid_xent(e, y, x)
    return keras_bce_probs(e, y, x, c["loss"].startswith("keras2"))


def f_keras_focal(e, c):
    # keras/src/losses/losses.py binary_focal_crossentropy (Keras 3; the BCE term from the
    # clipped probabilities even from logits); keras/backend.py (Keras 2; exact BCE from
    # logits, Keras 2's doubly-epsiloned BCE on probabilities)
    y, x = c["z"][0], c["x"][0]
    prm = c["params"]
    logits = prm.get("from_logits", False)
    keras2 = c["loss"].startswith("keras2")
    p = e.sigmoid(x) if logits else x
    if keras2:
        p_t = y * p + (1 - y) * (1 - p)
        ff = e.pow(1 - p_t, e.c(prm.get("gamma", 2.0)))
        bce = tf_sigmoid_xent(e, y, x) if logits else keras_bce_probs(e, y, x, True)
    else:
        bce = keras_bce_probs(e, y, p, False)
        p_t = y * p + (1 - y) * (1 - p)
        ff = e.pow(1 - p_t, e.c(prm.get("gamma", 2.0)))
    fl = ff * bce
    if prm.get("apply_class_balancing"):
        a = e.c(prm.get("alpha", 0.25))
        w = y * a + (1 - y) * (1 - a)
        fl = w * fl
    return fl


def f_tf_softmax(e, c):
    return e.softmax_xent(c["z"], c["x"])


def f_tf_sparse(e, c):
    return e.sparse_xent(c["label"], c["x"])


def f_keras_cce(e, c):
    y, x = c["z"], c["x"]
    if c["params"].get("from_logits"):
        return e.softmax_xent(y, x)
    # keras/src/backend/tensorflow/nn.py categorical_crossentropy on probabilities
    s = e.sum(x)
    eps, hi = e.c(1e-7), e.c(1 - 1e-7)
    terms = []
    for yc, xc in zip(y, x):
        o = e.minimum(e.maximum(xc / s, eps), hi)
        terms.append(yc * e.log(o))
    return -e.sum(terms)


def f_torch_ce(e, c):
    # ATen LossNLL.cpp cross_entropy (class-index or probability targets, label smoothing)
    x = c["x"]
    k = len(x)
    prm = c["params"]
    ls = prm.get("label_smoothing", 0.0)
    w = c.get("w")
    logp = e.log_softmax(x)
    if "label" not in c:
        terms = []
        for j in range(k):
            t = logp[j] * c["z"][j]
            terms.append(t * w[j] if w is not None else t)
        return -e.sum(terms)
    label = c["label"]
    if label == prm.get("ignore_index", -100):
        return e.zero()
    nll = -(logp[label] * w[label]) if w is not None else -logp[label]
    if ls > 0:
        terms = [logp[j] * w[j] for j in range(k)] if w is not None else logp
        smooth_loss = -e.sum(terms)
        return e.c(1 - ls) * nll + smooth_loss * e.c(ls / k)
    return nll


FORMULAS = {
    "tf.compat.v1.losses.sigmoid_cross_entropy": f_tf_sce,
    "tf.nn.sigmoid_cross_entropy_with_logits": f_tf_sce,
    "tf.nn.weighted_cross_entropy_with_logits": f_tfnn_weighted,
    "tf.compat.v1.losses.log_loss": f_tf_log_loss,
    "tf.compat.v1.losses.mean_squared_error": f_tf_mse,
    "tf.compat.v1.losses.absolute_difference": f_tf_absdiff,
    "tf.compat.v1.losses.huber_loss": f_tf_huber,
    "tf.compat.v1.losses.hinge_loss": f_tf_hinge,
    "tf.compat.v1.losses.compute_weighted_loss": f_tf_cwl,
    "torch.nn.functional.binary_cross_entropy_with_logits": f_torch_bce,
    "torchvision.ops.sigmoid_focal_loss": f_tv_focal,
    "ASL.AsymmetricLoss": f_asl,
    "keras3.losses.BinaryCrossentropy": f_keras_bce,
    "keras2.losses.BinaryCrossentropy": f_keras_bce,
    "keras3.losses.BinaryFocalCrossentropy": f_keras_focal,
    "keras2.losses.BinaryFocalCrossentropy": f_keras_focal,
    "tf.compat.v1.losses.softmax_cross_entropy": f_tf_softmax,
    "tf.compat.v1.losses.sparse_softmax_cross_entropy": f_tf_sparse,
    "keras3.losses.CategoricalCrossentropy": f_keras_cce,
    "torch.nn.functional.cross_entropy": f_torch_ce,
}

# ---- the real torch ----------------------------------------------------------------------


def torch_value(case):
    """The loss as torch 1.13 / torchvision 0.14 computes it, or None."""
    if torch is None:
        return None
    loss, prm = case["loss"], case["params"]
    tdt = torch.float32 if case["dtype"] == "float32" else torch.float64
    x = torch.tensor(case["x"], dtype=tdt)
    with torch.no_grad():
        if loss == "torch.nn.functional.binary_cross_entropy_with_logits":
            z = torch.tensor(case["labels"], dtype=tdt)
            pw = prm.get("pos_weight")
            pw = None if pw is None else torch.tensor([pw], dtype=tdt)
            r = F.binary_cross_entropy_with_logits(x, z, pos_weight=pw, reduction="none")
        elif loss == "torchvision.ops.sigmoid_focal_loss":
            z = torch.tensor(case["labels"], dtype=tdt)
            r = torchvision.ops.sigmoid_focal_loss(
                x, z, alpha=prm.get("alpha", 0.25), gamma=prm.get("gamma", 2.0), reduction="none")
        elif loss == "ASL.AsymmetricLoss":
            y = torch.tensor(case["labels"], dtype=tdt)
            gn, gp = prm.get("gamma_neg", 4), prm.get("gamma_pos", 1)
            clip, eps = prm.get("clip", 0.05), prm.get("eps", 1e-8)
            xs_pos = torch.sigmoid(x)
            xs_neg = 1 - xs_pos
            if clip is not None and clip > 0:
                xs_neg = (xs_neg + clip).clamp(max=1)
            los_pos = y * torch.log(xs_pos.clamp(min=eps))
            los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
            l = los_pos + los_neg
            if gn > 0 or gp > 0:
                pt = xs_pos * y + xs_neg * (1 - y)
                g = gp * y + gn * (1 - y)
                l = l * torch.pow(1 - pt, g)
            r = -l
        elif loss == "torch.nn.functional.cross_entropy":
            x = x.reshape(1, -1)
            w = case.get("weights")
            w = None if w is None else torch.tensor(w, dtype=tdt)
            if case.get("labels_dtype") == "int64":
                t = torch.tensor(case["labels"], dtype=torch.int64)
            else:
                t = torch.tensor(case["labels"], dtype=tdt).reshape(1, -1)
            r = F.cross_entropy(x, t, weight=w, ignore_index=int(prm.get("ignore_index", -100)),
                                reduction="none", label_smoothing=prm.get("label_smoothing", 0.0))
        else:
            return None
    return float(r.reshape(-1)[0])


# ---- evaluation of a case ----------------------------------------------------------------


def bind(case, e):
    """The formula's inputs as values of the evaluation."""
    dt = case["dtype"]
    c = {"loss": case["loss"], "params": case["params"]}
    c["x"] = [e.inp(v) for v in case["x"]]
    z = case.get("labels")
    if case.get("labels_dtype") == "int64":
        c["label"] = int(z[0])
    elif z is not None:
        c["z"] = [e.inp(v) for v in case["zs"]]
    if case.get("weights") is not None:
        c["w"] = [e.inp(v) for v in case["weights"]]
    assert all(is_dt(v, dt) for v in case["x"])
    return c


def evaluate(case, mode, target=-1):
    e = Ev(case["dtype"], mode, target)
    r = FORMULAS[case["loss"]](e, bind(case, e))
    return r.v, e


def ulp_distance(a, b, dt):
    """Distance in representable numbers of the dtype between two values of it."""
    if math.isnan(a) or math.isnan(b):
        return math.inf
    if dt == "float32":
        ia = int(np.array(a, dtype=np.float32).view(np.int32))
        ib = int(np.array(b, dtype=np.float32).view(np.int32))
        fa = ia if ia >= 0 else -(ia & 0x7FFFFFFF)
        fb = ib if ib >= 0 else -(ib & 0x7FFFFFFF)
    else:
        ia = int(np.array(a, dtype=np.float64).view(np.int64))
        ib = int(np.array(b, dtype=np.float64).view(np.int64))
        fa = ia if ia >= 0 else -(ia & 0x7FFFFFFFFFFFFFFF)
        fb = ib if ib >= 0 else -(ib & 0x7FFFFFFFFFFFFFFF)
    return abs(fa - fb)


def solve(case):
    dt = case["dtype"]
    with mp.workprec(REF_PREC):
        exact, _ = evaluate(case, "exact")
    with mp.workprec(CHECK_PREC):
        check, _ = evaluate(case, "exact")
    if not mpmath.isfinite(exact):
        raise ValueError("%s: the loss is not finite" % case["id"])
    # Agreement to 200 bits, or both below 2^-1100, where every dtype rounds to zero (a
    # cancellation of terms below 2^24 loses at most values that small at 1200 bits).
    tiny = mpf(2) ** -1100
    if abs(exact - check) > abs(check) * mpf(2) ** -200 and not (abs(exact) < tiny
                                                                  and abs(check) < tiny):
        raise ValueError("%s: %d bits are not enough" % (case["id"], REF_PREC))
    exact = check
    ref = rnd(exact, dt)
    if not mpmath.isfinite(ref):
        raise ValueError("%s: the loss overflows the dtype" % case["id"])

    with mp.workprec(PERTURB_PREC):
        _, ev = evaluate(case, "round")
        base, _ = evaluate(case, "exact")
        kappa = mpf(0)
        for k, rounded in enumerate(ev.rounded):
            if not rounded:
                continue
            fk, _ = evaluate(case, "exact", k)
            if not mpmath.isfinite(fk):  # e.g. 1 - p_t pushed below 0 under a power of 0.5
                kappa = mpmath.inf
                break
            if base == 0:
                if fk != 0:
                    kappa = mpmath.inf
                    break
                continue
            kappa += abs(fk - base) / (abs(base) * DELTA)
    fw, src = torch_value(case), "torch"
    if fw is None:
        with np.errstate(all="ignore"):
            fw, src = float(evaluate(case, "numpy")[0]), "numpy"
    kappa = float(min(kappa, mpf(1e300)))
    fw_ulp = ulp_distance(fw, float(ref), dt)
    if not math.isfinite(fw):
        fw, fw_ulp = None, 1e300  # JSON has no NaN: no bound from the framework then
    out = dict(case)
    del out["zs"]
    out.update({
        "exact": mpmath.nstr(exact, 25, min_fixed=-4, max_fixed=6) if exact != 0 else "0",
        "ref": float(ref),
        "fw": fw,
        "fw_src": src,
        "fw_ulp": fw_ulp,
        "kappa": float("%.4g" % kappa),
        "cond": "well" if kappa <= KAPPA_WELL else "ill",
    })
    return out


# ---- the adversarial inputs ------------------------------------------------------------

L13 = 13.419898768799802  # issue 10: float64 label 0 loses 5.1e-10 relative here
X_FULL = [0.0, 1e-8, -1e-8, 1e-4, -1e-4, 0.1, -0.1, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 5.0, -5.0,
          10.0, -10.0, L13, -L13, 17.0, -17.0, 20.0, -20.0, 26.98, -26.98, 40.0, -40.0,
          80.0, -80.0, 88.0, -88.0, 1e3, -1e3, 1e4, -1e4]
X_EDGE = [1e-8, -0.5, 2.0, -10.0, -L13, 26.98, -80.0, 1e4]
Z_FULL = [0.0, 1.0, 0.3, 0.999]
Z_EDGE = [0.0, 1.0, 0.3]
P_FULL = [0.0, 1e-8, 1e-7, 1e-4, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999, 0.9999999, 1 - 1e-8, 1.0]
P_EDGE = [1e-8, 1e-4, 0.3, 0.9, 0.9999999, 1.0]
DTS = ["float32", "float64"]


def fmt(v):
    return ("%.6g" % v).replace("e-0", "e-").replace("e+0", "e")


def elem(loss, dt, z, x, params=None, inp="logits", shape=(1,), tag=""):
    z = to_dt(z, dt)
    x = to_dt(x, dt)
    params = dict(params or {})
    pid = ",".join("%s=%s" % (k, fmt(v) if not isinstance(v, bool) else str(v).lower())
                   for k, v in sorted(params.items()))
    c = {"id": "%s/f%s/z=%s/x=%s%s%s" % (loss, dt[5:], fmt(z), fmt(x), "/" + pid if pid else "",
                                        tag),
         "loss": loss, "dtype": dt, "shape": list(shape), "params": params, "input": inp,
         "labels": [z], "x": [x]}
    if inp == "losses":
        del c["labels"]
    ls = params.get("label_smoothing", 0.0)
    if ls != 0 and not (loss.startswith("tf.") and ls < 0):
        c["zs"] = smooth([z], ls, 2, dt)
    else:
        c["zs"] = [z]
    return c


def row(loss, dt, y, x, params=None, inp="logits", sparse=False, weights=None, torch_style=False):
    x = [to_dt(v, dt) for v in x]
    params = dict(params or {})
    pid = ",".join("%s=%s" % (k, fmt(v) if not isinstance(v, bool) else str(v).lower())
                   for k, v in sorted(params.items()))
    ystr = str(y) if sparse else "[" + ",".join(fmt(v) for v in y) + "]"
    c = {"id": "%s/f%s/y=%s/x=[%s]%s%s" % (loss, dt[5:], ystr, ",".join(fmt(v) for v in x),
                                          "/" + pid if pid else "",
                                          "/w=[" + ",".join(fmt(v) for v in weights) + "]"
                                          if weights else ""),
         "loss": loss, "dtype": dt, "shape": [1, len(x)], "params": params, "input": inp,
         "x": x}
    if sparse:
        c["labels"] = [y]
        c["labels_dtype"] = "int64"
        c["zs"] = None
    else:
        y = [to_dt(v, dt) for v in y]
        c["labels"] = y
        ls = params.get("label_smoothing", 0.0)
        c["zs"] = smooth(y, ls, len(x), dt, torch_style) if ls > 0 or (
            ls != 0 and loss.startswith("keras")) else y
    if weights is not None:
        c["weights"] = [to_dt(v, dt) for v in weights]
    return c


def cases():
    out = []
    for dt in DTS:
        # The sigmoid family.
        for loss in ["tf.compat.v1.losses.sigmoid_cross_entropy",
                     "tf.nn.sigmoid_cross_entropy_with_logits",
                     "torch.nn.functional.binary_cross_entropy_with_logits",
                     "torchvision.ops.sigmoid_focal_loss", "ASL.AsymmetricLoss"]:
            out += [elem(loss, dt, z, x) for z in Z_FULL for x in X_FULL]
        out += [elem("tf.nn.weighted_cross_entropy_with_logits", dt, z, x, {"pos_weight": 3.5})
                for z in Z_FULL for x in X_FULL]
        for ls in [1e-3, 0.1, 1.0]:
            out += [elem("tf.compat.v1.losses.sigmoid_cross_entropy", dt, z, x,
                         {"label_smoothing": ls}) for z in Z_EDGE for x in X_EDGE]
        for pw in [0.0, 1.0, 1000.0]:
            for loss in ["tf.nn.weighted_cross_entropy_with_logits",
                         "torch.nn.functional.binary_cross_entropy_with_logits"]:
                out += [elem(loss, dt, z, x, {"pos_weight": pw}) for z in Z_EDGE for x in X_EDGE]
        for alpha, gamma in [(-1.0, 2.0), (0.0, 2.0), (1.0, 2.0), (2.0, 2.0), (0.25, 0.0),
                             (0.25, 1.0), (0.25, 0.5), (0.25, 1.5), (-1.0, 3.0)]:
            out += [elem("torchvision.ops.sigmoid_focal_loss", dt, z, x,
                         {"alpha": alpha, "gamma": gamma}) for z in Z_EDGE for x in X_EDGE]
        for gn, gp, clip, eps in [(0.0, 0.0, 0.0, 1e-8), (4.0, 0.0, 0.05, 1e-8),
                                  (2.5, 0.5, 0.05, 1e-8), (4.0, 1.0, 0.0, 1e-8),
                                  (1.0, 1.0, 0.5, 1e-3), (4.0, 1.0, 0.05, 0.0)]:
            prm = {"gamma_neg": gn, "gamma_pos": gp, "clip": clip, "eps": eps}
            xs = [v for v in X_EDGE if not (eps == 0 and abs(v) > 80)]
            out += [elem("ASL.AsymmetricLoss", dt, z, x, prm) for z in Z_EDGE for x in xs]

        # Keras binary losses: probabilities and logits.
        for loss in ["keras3.losses.BinaryCrossentropy", "keras2.losses.BinaryCrossentropy"]:
            out += [elem(loss, dt, z, p, {}, "predictions", (1, 1)) for z in Z_FULL
                    for p in P_FULL]
            out += [elem(loss, dt, z, x, {"from_logits": True}, "logits", (1, 1))
                    for z in Z_EDGE for x in X_EDGE]
            for ls in [0.1, 1.0]:
                out += [elem(loss, dt, z, p, {"label_smoothing": ls}, "predictions", (1, 1))
                        for z in Z_EDGE for p in P_EDGE]
                out += [elem(loss, dt, z, x, {"from_logits": True, "label_smoothing": ls},
                             "logits", (1, 1)) for z in Z_EDGE for x in X_EDGE]
        for loss in ["keras3.losses.BinaryFocalCrossentropy",
                     "keras2.losses.BinaryFocalCrossentropy"]:
            out += [elem(loss, dt, z, p, {}, "predictions", (1, 1)) for z in Z_FULL
                    for p in P_FULL]
            out += [elem(loss, dt, z, x, {"from_logits": True}, "logits", (1, 1))
                    for z in Z_FULL for x in X_EDGE]
            for prm in [{"gamma": 0.0}, {"gamma": 0.5}, {"gamma": 3.0},
                        {"apply_class_balancing": True},
                        {"apply_class_balancing": True, "alpha": 1.0},
                        {"label_smoothing": 0.1}]:
                out += [elem(loss, dt, z, p, prm, "predictions", (1, 1)) for z in Z_EDGE
                        for p in P_EDGE]
                lp = dict(prm, from_logits=True)
                out += [elem(loss, dt, z, x, lp, "logits", (1, 1)) for z in Z_EDGE
                        for x in X_EDGE]

        # TF pointwise losses.
        out += [elem("tf.compat.v1.losses.log_loss", dt, z, p, {}, "predictions")
                for z in Z_FULL for p in P_FULL]
        for eps in [0.0, 1e-3]:
            out += [elem("tf.compat.v1.losses.log_loss", dt, z, p, {"epsilon": eps},
                         "predictions") for z in Z_EDGE for p in P_EDGE
                    if not (eps == 0 and p in (0.0, 1.0))]
        pairs = [(0.0, 0.0), (1.0, 1.0), (0.3, 0.3), (1.0, 1.0000001), (1.0, 0.9999999),
                 (0.3, 0.30000001), (0.0, 1e-8), (1e-8, -1e-8), (0.0, 1e4), (1e4, -1e4),
                 (0.3, -0.7), (1.0, 2.5), (1e-4, 1e-4 + 1e-12), (-3.0, 5.0), (0.999, 0.5),
                 (123.456, 123.457), (1.0, 0.0), (0.0, -2.0)]
        for loss in ["tf.compat.v1.losses.mean_squared_error",
                     "tf.compat.v1.losses.absolute_difference"]:
            out += [elem(loss, dt, z, p, {}, "predictions") for z, p in pairs]
        for delta in [1.0, 0.5, 1e-3, 1e4]:
            for k in [0.0, 1e-8, 0.5, 0.9999999, 1.0, 1.0000001, 2.0, 1e3]:
                for z in [0.0, 0.3]:
                    out.append(elem("tf.compat.v1.losses.huber_loss", dt, z, z + k * delta,
                                    {"delta": delta}, "predictions"))
                    out.append(elem("tf.compat.v1.losses.huber_loss", dt, z, z - k * delta,
                                    {"delta": delta}, "predictions"))
        hx = [0.0, 1e-8, 0.5, 0.9999999, 1.0, 1.0000001, 2.5, -2.5, -1.0, -0.9999999, 3.0,
              -1.4285714, 1e4, -1e4]
        out += [elem("tf.compat.v1.losses.hinge_loss", dt, z, x) for z in Z_FULL for x in hx]
        out += [elem("tf.compat.v1.losses.compute_weighted_loss", dt, 0.0, v, {}, "losses")
                for v in [0.0, 1e-8, 0.3, 16.118095, 1e4]]

        # The softmax family.
        rows = [([1, 0], [20, 10]), ([0, 1], [20, 10]), ([1, 0], [10000, 9990]),
                ([0, 1], [10000, 9990]), ([1, 0], [0, 0]), ([1, 0], [1e-8, 0]),
                ([1, 0, 0, 0, 0], [5, 4, 3, 2, 1]), ([0, 0, 0, 0, 1], [5, 4, 3, 2, 1]),
                ([1, 0, 0], [100, 0, -100]), ([1, 0], [88, 0]), ([1, 0, 0, 0], [30, 0, 0, 0]),
                ([1, 0], [-1e4, 1e4]), ([1, 0], [1e4, -1e4]), ([0, 0, 1, 0], [0.5, 0.25, -1, 2]),
                ([1, 0], [40, 20]), ([1, 0], [L13, 0]), ([0.9, 0.1], [20, 10]),
                ([0.5, 0.5], [3, -3]), ([0.999, 0.001], [10000, 9990]),
                ([0.3, 0.3, 0.4], [1, 2, 3])]
        for y, x in rows:
            out.append(row("tf.compat.v1.losses.softmax_cross_entropy", dt, y, x))
            out.append(row("keras3.losses.CategoricalCrossentropy", dt, y, x,
                           {"from_logits": True}))
            out.append(row("torch.nn.functional.cross_entropy", dt, y, x))
            if max(y) == 1:
                out.append(row("tf.compat.v1.losses.sparse_softmax_cross_entropy", dt,
                               y.index(1), x, sparse=True))
                out.append(row("torch.nn.functional.cross_entropy", dt, y.index(1), x,
                               sparse=True))
        for y, x in rows[:6] + rows[13:16]:
            for ls in [0.1, 1.0]:
                out.append(row("tf.compat.v1.losses.softmax_cross_entropy", dt, y, x,
                               {"label_smoothing": ls}))
                out.append(row("keras3.losses.CategoricalCrossentropy", dt, y, x,
                               {"from_logits": True, "label_smoothing": ls}))
                out.append(row("torch.nn.functional.cross_entropy", dt, y, x,
                               {"label_smoothing": ls}, torch_style=True))
                out.append(row("torch.nn.functional.cross_entropy", dt, y.index(1), x,
                               {"label_smoothing": ls}, sparse=True))
        for y, x, w in [([1, 0], [20, 10], [0.5, 2.0]), ([0, 1], [20, 10], [0.5, 2.0]),
                        ([1, 0, 0], [100, 0, -100], [3.0, 0.0, 1.0]),
                        ([0, 1, 0], [100, 0, -100], [3.0, 0.0, 1.0]),
                        ([1, 0], [10000, 9990], [0.0, 1.0])]:
            out.append(row("torch.nn.functional.cross_entropy", dt, y.index(1), x, sparse=True,
                           weights=w))
            out.append(row("torch.nn.functional.cross_entropy", dt, y.index(1), x,
                           {"label_smoothing": 0.1}, sparse=True, weights=w))
            out.append(row("torch.nn.functional.cross_entropy", dt, y, x, weights=w))
        out.append(row("torch.nn.functional.cross_entropy", dt, 1, [20, 10],
                       {"ignore_index": 1}, sparse=True))
        prob_rows = [([1, 0], [0.9999, 0.0001]), ([0, 1], [0.9999, 0.0001]),
                     ([1, 0], [0.5, 0.5]), ([1, 0], [1e-8, 1 - 1e-8]), ([0, 1], [1e-8, 1 - 1e-8]),
                     ([1, 0], [1, 0]), ([0, 1], [1, 0]), ([0, 0, 1], [0.2, 0.3, 0.5]),
                     ([1, 0], [2, 6]), ([0.25, 0.75], [0.3, 0.7]), ([1, 0, 0], [0.999, 1e-4, 9e-4])]
        for y, p in prob_rows:
            for ls in [0.0, 0.1]:
                out.append(row("keras3.losses.CategoricalCrossentropy", dt, y, p,
                               {"label_smoothing": ls} if ls else {}, inp="predictions"))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", default="tests/data/accuracy.json")
    ap.add_argument("-k", help="only cases whose id contains this (needs -o: not the data file)")
    args = ap.parse_args()
    if args.k and args.output == ap.get_default("output"):
        ap.error("-k writes a partial file: give -o")
    todo = [c for c in cases() if not args.k or args.k in c["id"]]
    ids = set()
    done = []
    t0 = time.time()
    for i, c in enumerate(todo):
        if c["id"] in ids:
            continue
        ids.add(c["id"])
        done.append(solve(c))
        if (i + 1) % 500 == 0:
            print("%d/%d cases, %.0f s" % (i + 1, len(todo), time.time() - t0), file=sys.stderr)
    meta = {
        "what": "per-element losses on adversarial inputs, exact (mpmath) and as the framework's "
                "own float computation; read by tests/test_accuracy.c",
        "generator": "tests/accuracy/gen.py (its docstring states the rules)",
        "versions": {"mpmath": mpmath.__version__, "numpy": np.__version__,
                     "torch": torch.__version__ if torch else None,
                     "torchvision": torchvision.__version__ if torch else None},
        "bound": "cond well: within 4 ulp of ref; cond ill: within max(4, min(kappa, 16), "
                 "2 * fw_ulp) ulp of ref",
        "kappa_well": KAPPA_WELL,
        "keys": {
            "id": "loss/dtype/labels/inputs/params",
            "shape": "shape of labels and of the prediction input (sparse labels: [1])",
            "input": "logits, predictions or losses: the request field of x",
            "labels_dtype": "int64 for class-index labels (default: the case's dtype)",
            "weights": "torch cross_entropy class weights",
            "exact": "the exact loss, 25 digits",
            "ref": "the exact loss rounded to the dtype",
            "fw": "the framework's own float computation (fw_src: torch, or numpy for TF and "
                  "Keras); null when it is not finite",
            "fw_ulp": "ulp distance of fw from ref",
            "kappa": "amplification of the framework formula's rounding errors",
            "cond": "well (kappa <= 4) or ill",
        },
    }
    with open(args.output, "w") as f:
        f.write('{"_meta": ' + json.dumps(meta, indent=1) + ',\n "cases": [\n')
        f.write(",\n".join(json.dumps(c, separators=(",", ":")) for c in done))
        f.write("\n]}\n")
    ill = sum(c["cond"] == "ill" for c in done)
    print("%d cases (%d ill-conditioned) in %.0f s -> %s" % (len(done), ill, time.time() - t0,
                                                            args.output), file=sys.stderr)


if __name__ == "__main__":
    main()
