"""maskloss_client -- evaluate masked, weighted losses on a maskloss-server from Python.

Standard library plus numpy. Arrays travel as binary tensors over the Open Inference
Protocol (POST /v2/models/{loss}/infer with Triton's binary data extension), so a
1000x1000 batch costs a memcpy, not a million JSON numbers.

    from maskloss_client import Client
    client = Client("http://127.0.0.1:8080")
    loss = client.loss("sigmoid_cross_entropy", labels=y, logits=x, weights=mask)

Monitors (a loss tracked over time, per slice, with drift) go over /v1/monitors as JSON, numpy
arrays as base64 tensors:

    ctr = client.monitor("ctr")
    ctr.create({"loss": "sigmoid_cross_entropy", "slices": ["model_version"]})
    ctr.observe(labels=y, logits=x, mask=mask, slice={"model_version": "7"})
    ctr.show()["windows"]["5m"]["loss"]

On a shared endpoint (a server with --auth-file, over HTTPS), give the token and, for a
certificate the system does not trust, its PEM file; the token defaults to $MASKLOSS_TOKEN:

    client = Client("https://maskloss.example.org:8443", token=token, cafile="cert.pem")

A Client keeps one HTTP/1.1 connection open; use one Client per thread.
"""
import base64
import datetime
import email.utils
import http.client
import json
import numbers
import os
import re
import ssl
import time
import urllib.parse

import numpy as np

__all__ = ["Client", "Monitor", "MasklossError", "OUTPUTS"]

# numpy dtype -> Open Inference Protocol datatype, for the types the server takes.
_DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
}
_NUMPY = {"FP32": np.float32, "FP64": np.float64, "BOOL": np.bool_, "UINT8": np.uint8,
          "INT32": np.int32, "INT64": np.int64}
# Wider types the server does not take are converted losslessly first.
_WIDEN = {np.dtype(np.float16): np.float32, np.dtype(np.int8): np.int32,
          np.dtype(np.int16): np.int32, np.dtype(np.uint16): np.int32,
          np.dtype(np.uint32): np.int64}

OUTPUTS = ("loss", "per_element", "per_sample", "per_class", "weighted_sum", "sum_weights",
           "num_nonzero_weights")


class MasklossError(Exception):
    """The server refused a request. `status` is the HTTP status; `code` the machine-readable
    error code ("shape_mismatch", "unknown_loss", "unauthorized", "forbidden", ...); `field`
    the request field at fault; `retry_after` the seconds the server asked to wait before
    trying again (its Retry-After header, sent with 429 and 503), else None."""

    def __init__(self, message, status=None, code=None, field=None, retry_after=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.field = field
        self.retry_after = retry_after

    def __str__(self):
        where = f" [{self.code}{' in ' + self.field if self.field else ''}]" if self.code else ""
        return f"HTTP {self.status}: {self.message}{where}"


def _retry_after(value):
    """Retry-After in seconds: delay-seconds, or an HTTP-date (RFC 9110 10.2.3) from now; None
    when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # (an HTTP-date is always GMT)
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())


# RFC 9110 field-value characters a token may hold: visible ASCII. Anything else either cannot
# travel in a header (CR, LF, NUL) or would not arrive as sent.
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")


def _tensor(name, value):
    a = np.asarray(value)
    if a.dtype in _WIDEN:
        a = a.astype(_WIDEN[a.dtype])
    if a.dtype not in _DATATYPES and a.dtype.newbyteorder("=") in _DATATYPES:
        a = a.astype(a.dtype.newbyteorder("="))  # byte order: native, then little-endian below
    if a.dtype not in _DATATYPES:
        raise TypeError(f"{name}: numpy dtype {a.dtype} is not supported; use float32, float64, "
                        "bool, uint8, int32 or int64")
    datatype = _DATATYPES[a.dtype]
    raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    return {"name": name, "shape": list(a.shape), "datatype": datatype,
            "parameters": {"binary_data_size": len(raw)}}, raw


def _json_tensor(name, value):
    """A tensor of a JSON request: numpy arrays (and numpy scalars) as base64 of their
    little-endian bytes, nested lists and Python numbers as they are."""
    if isinstance(value, (np.ndarray, np.generic)):
        a = np.asarray(value)
        if a.dtype in _WIDEN:
            a = a.astype(_WIDEN[a.dtype])
        if a.dtype not in _DATATYPES and a.dtype.newbyteorder("=") in _DATATYPES:
            a = a.astype(a.dtype.newbyteorder("="))
        if a.dtype not in _DATATYPES:
            raise TypeError(f"{name}: numpy dtype {a.dtype} is not supported; use float32, "
                            "float64, bool, uint8, int32 or int64")
        raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
        return {"shape": list(a.shape), "dtype": np.dtype(a.dtype).name,
                "b64": base64.b64encode(raw).decode("ascii")}
    return value


def _when(name, value):
    """Unix seconds (int or float) or an RFC 3339 string, from those or an aware datetime."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name}: a naive datetime is ambiguous; give it a tzinfo")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise TypeError(f"{name}: Unix seconds, an RFC 3339 string or an aware datetime")
    return float(value) if isinstance(value, np.generic) else value


class Monitor:
    """One monitor of the server, /v1/monitors/{name}: Client.monitor(name). Every method
    raises MasklossError when the server refuses (code "monitor_not_found",
    "monitor_conflict", "invalid_observation", a tensor error of /v1/loss, ...)."""

    def __init__(self, client, name):
        self.client = client
        self.name = name
        self._path = f"/v1/monitors/{urllib.parse.quote(name, safe='')}"

    def __repr__(self):
        return f"Monitor({self.name!r})"

    def create(self, config, force=False):
        """PUT the config (a dict: loss, params, reduction, dtype, classes or num_classes,
        slices, windows, retention, drift, export_classes). Returns {"name", "config"} with
        the normalized config; the same config again is no change. A different one raises
        MasklossError code "monitor_conflict" unless force=True, which replaces it and clears
        the monitor's data."""
        return self.client._call("PUT", self._path + ("?force=true" if force else ""), config)

    def observe(self, labels=None, logits=None, mask=None, time=None, slice=None, id=None,
                **tensors):
        """POSTs one observation: the tensors of a /v1/loss request (labels, logits or
        predictions or losses, mask or weights; numpy arrays or nested lists), at `time` (Unix
        seconds, an RFC 3339 string or an aware datetime; default: the server's clock), in
        `slice` (a dict of the config's slice keys to strings), with `id` (an idempotency key:
        a repeat is counted once and answered with "duplicate": True). Returns the answer:
        loss, weighted_sum, denominator, sum_weights, num_nonzero_weights, elements, samples,
        time, bucket, duplicate."""
        body = {}
        for key, value in (("labels", labels), ("logits", logits), ("mask", mask)):
            if value is not None:
                body[key] = _json_tensor(key, value)
        for key, value in tensors.items():
            if value is not None:
                body[key] = _json_tensor(key, value)
        if time is not None:
            body["time"] = _when("time", time)
        if slice is not None:
            body["slice"] = dict(slice)
        if id is not None:
            body["id"] = id
        return self.client._call("POST", self._path + "/observe", body)

    def show(self):
        """The figures: {"name", "config", "now", "total", "windows", "slices", "drift"}."""
        return self.client._call("GET", self._path)

    def series(self, step=None, from_=None, to=None, slice=None, class_=None):
        """The loss per `step` (a duration string such as "5m", or seconds) between `from_` and
        `to` (Unix seconds, RFC 3339 strings or aware datetimes; default the last 24 h), over
        the observations in every slice of `slice` (a dict, or "key=value" strings), or for one
        class (`class_`: a name or an index). Returns {"name", "step", "from", "to", "points"}."""
        query = []
        if step is not None:
            if isinstance(step, numbers.Real) and not isinstance(step, bool):
                step = f"{int(step)}s" if float(step).is_integer() else f"{step}s"
            query.append(("step", step))
        if from_ is not None:
            query.append(("from", _when("from_", from_)))
        if to is not None:
            query.append(("to", _when("to", to)))
        items = slice.items() if isinstance(slice, dict) else \
            (s.split("=", 1) for s in ([slice] if isinstance(slice, str) else slice or ()))
        for key, value in items:
            query.append(("slice", f"{key}={value}"))
        if class_ is not None:
            query.append(("class", class_))
        path = self._path + "/series"
        if query:
            path += "?" + urllib.parse.urlencode(query)
        return self.client._call("GET", path)

    def delete(self):
        """Deletes the monitor and its data."""
        self.client._call("DELETE", self._path)


class Client:
    """A connection to one maskloss-server: Client("http://host:port").

    `token`: sent as "Authorization: Bearer <token>" with every request (v1, v2 and monitor
    routes alike), for a server with --auth-file; None reads $MASKLOSS_TOKEN, and "" sends
    none. `cafile`: for https:// URLs, a PEM file of the certificates to trust instead of the
    system's (a self-signed server certificate, or a private CA). HTTPS always verifies the
    certificate and the host name, with TLS 1.2 at least. The token is never shown: not in
    repr(), nor in the messages of the errors raised."""

    def __init__(self, url="http://127.0.0.1:8080", timeout=60.0, token=None, cafile=None):
        u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if u.scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme {u.scheme!r}")
        if token is None:
            token = os.environ.get("MASKLOSS_TOKEN", "")
        if not isinstance(token, str):
            raise TypeError(f"token: a str, not {type(token).__name__}")
        # (surrounding white space: a token read from a file with its newline)
        token = token.strip(" \t\r\n")
        if token and not _TOKEN_RE.fullmatch(token):
            # Not the token itself in the message: it is a secret, even when malformed.
            raise ValueError("token: only visible ASCII characters may travel in an Authorization "
                             "header; this one has others (a control character, a space or a "
                             "non-ASCII letter)")
        self._token = token
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        port = u.port or (443 if u.scheme == "https" else 80)
        if u.scheme == "https":
            ctx = ssl.create_default_context(cafile=cafile)  # the system's trust without cafile
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            self._conn = http.client.HTTPSConnection(u.hostname, port, timeout=timeout, context=ctx)
        elif cafile is not None:
            # A cafile says the caller expects TLS: refuse rather than send the token in clear.
            raise ValueError("cafile is for https:// URLs; this one is http://")
        else:
            self._conn = http.client.HTTPConnection(u.hostname, port, timeout=timeout)
        self._base = u.path.rstrip("/")
        # (without user:password@, which repr() would show)
        self.url = urllib.parse.urlunsplit((u.scheme, u.netloc.rpartition("@")[2], self._base, "", ""))

    def __repr__(self):
        return f"Client({self.url!r}{', token=<set>' if self._token else ''})"

    def close(self):
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _request(self, method, path, body=None, headers=None):
        headers = dict(headers or {}, **self._auth)
        for attempt in (0, 1):
            try:
                self._conn.request(method, self._base + path, body=body, headers=headers)
                resp = self._conn.getresponse()
                return resp, resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A keep-alive connection the server closed meanwhile: reconnect once.
                self._conn.close()
                if attempt:
                    raise
            except ssl.SSLCertVerificationError as e:
                # The same exception, with what to do about it.
                self._conn.close()
                err = ssl.SSLCertVerificationError(
                    e.errno, f"{e.strerror or e}: {self.url} sent a certificate this client does "
                    "not trust; give Client(cafile=...) the PEM of the server's certificate or of "
                    "its CA, or add that to the system's trust store")
                for attr in ("reason", "library", "verify_code", "verify_message"):
                    setattr(err, attr, getattr(e, attr, None))
                raise err from e

    def _raise(self, resp, data):
        try:
            body = json.loads(data)
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        message = body.get("error") or data.decode(errors="replace") or resp.reason
        if self._token:
            # (a proxy's error page may echo the request's headers)
            message = message.replace(self._token, "<token>")
        raise MasklossError(message, resp.status, body.get("code"), body.get("field"),
                            _retry_after(resp.getheader("Retry-After")))

    def evaluate(self, loss, labels=None, logits=None, predictions=None, losses=None,
                 weights=None, reduction=None, dtype=None, outputs=("loss",),
                 allow_non_finite=False, **params):
        """Evaluates `loss` and returns a dict of the requested outputs: numpy arrays, with
        scalars as Python floats (num_nonzero_weights as int). Loss parameters (label_smoothing,
        pos_weight, gamma, ...) are keyword arguments with scalar values."""
        inputs, chunks = [], []
        for name, value in (("LABELS", labels), ("LOGITS", logits), ("PREDICTIONS", predictions),
                            ("LOSSES", losses), ("WEIGHTS", weights)):
            if value is not None:
                meta, raw = _tensor(name, value)
                inputs.append(meta)
                chunks.append(raw)
        parameters = dict(params)
        if reduction is not None:
            parameters["reduction"] = reduction
        if dtype is not None:
            parameters["dtype"] = dtype
        if allow_non_finite:
            parameters["allow_non_finite"] = True
        for k, v in parameters.items():
            if not isinstance(v, (str, int, float, bool)):
                raise TypeError(f"parameter {k}: only scalars travel in v2 parameters")
        unknown = [o for o in outputs if o not in OUTPUTS]
        if unknown:
            raise ValueError(f"unknown outputs {unknown}; choose from {OUTPUTS}")
        header = json.dumps({
            "parameters": parameters,
            "inputs": inputs,
            "outputs": [{"name": o.upper(), "parameters": {"binary_data": True}} for o in outputs],
        }).encode()
        body = header + b"".join(chunks)
        path = f"/v2/models/{urllib.parse.quote(loss, safe='')}/infer"
        resp, data = self._request("POST", path, body, {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        })
        if resp.status != 200:
            self._raise(resp, data)
        return self._decode(resp, data)

    @staticmethod
    def _decode(resp, data):
        hlen = resp.getheader("Inference-Header-Content-Length")
        hlen = int(hlen) if hlen is not None else len(data)
        doc = json.loads(data[:hlen])
        tail = memoryview(data)[hlen:]
        result, offset = {}, 0
        for out in doc["outputs"]:
            dt = _NUMPY[out["datatype"]]
            size = (out.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                arr = np.frombuffer(tail[offset:offset + size], dtype=np.dtype(dt).newbyteorder("<"))
                offset += size
            else:
                arr = np.array(out["data"], dtype=dt)
            arr = arr.reshape(out["shape"]).astype(dt, copy=False)
            name = out["name"].lower()
            if arr.ndim == 0:
                result[name] = int(arr) if out["datatype"] == "INT64" else float(arr)
            else:
                result[name] = arr
        return result

    def loss(self, loss, **kwargs):
        """The reduced loss as a float (or an array for reduction none)."""
        return self.evaluate(loss, outputs=("loss",), **kwargs)["loss"]

    def _call(self, method, path, body=None):
        """A JSON request: the parsed answer of a 2xx (None when it has no body), else
        MasklossError."""
        headers = {"Accept": "application/json"}
        if body is not None:
            body = json.dumps(body, allow_nan=False).encode()
            headers["Content-Type"] = "application/json"
        resp, data = self._request(method, path, body, headers)
        if not 200 <= resp.status < 300:
            self._raise(resp, data)
        return json.loads(data) if data else None

    def monitor(self, name):
        """The monitor `name` (nothing is sent until one of its methods is called)."""
        return Monitor(self, name)

    def monitors(self):
        """Every monitor: a list of {"name", "config"}, sorted by name."""
        return self._call("GET", "/v1/monitors")["monitors"]

    def losses(self):
        """The catalogue: every loss with its parameters, defaults and reductions."""
        resp, data = self._request("GET", "/v1/losses")
        if resp.status != 200:
            self._raise(resp, data)
        return json.loads(data)["losses"]

    def ready(self):
        """True when the server accepts work (GET /v2/health/ready answers 200)."""
        resp, _ = self._request("GET", "/v2/health/ready")
        return resp.status == 200
