"""The client: Client (a keep-alive connection to one server), Monitor, MasklossError.

Arrays travel as binary tensors over the Open Inference Protocol (POST /v2/models/{loss}/infer
with Triton's binary data extension) when numpy is there, so a 1000x1000 batch costs a memcpy,
not a million JSON numbers; without numpy, nested lists travel as the protocol's JSON data and
the outputs come back as nested lists.
"""
from __future__ import annotations

import base64
import datetime
import email.utils
import http.client
import json
import numbers
import os
import random
import re
import select
import ssl
import time
import urllib.parse
from typing import Any, Dict, Iterable, List, Mapping, NoReturn, Optional, Sequence, Tuple, Union

try:
    import numpy as np
except ImportError:  # numpy is optional: lists in, lists out
    np = None  # type: ignore[assignment]

__all__ = ["Client", "Monitor", "MasklossError", "OUTPUTS"]

When = Union[float, int, str, datetime.datetime]

if np is not None:
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

# The tensors of a /v1/loss request.
_V1_TENSORS = ("labels", "logits", "predictions", "losses", "mask", "weights")
OUTPUTS = ("loss", "per_element", "per_sample", "per_class", "weighted_sum", "sum_weights",
           "num_nonzero_weights")


class MasklossError(Exception):
    """The server refused a request. `status` is the HTTP status; `code` the machine-readable
    error code ("shape_mismatch", "unknown_loss", "unauthorized", "forbidden", ...); `field`
    the request field at fault; `retry_after` the seconds the server asked to wait before
    trying again (its Retry-After header, sent with 429 and 503), else None; `body` the whole
    error object (with `index`, `line`, `column` where they apply), {} when it was not JSON."""

    def __init__(self, message: str, status: Optional[int] = None, code: Optional[str] = None,
                 field: Optional[str] = None, retry_after: Optional[float] = None,
                 body: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.field = field
        self.retry_after = retry_after
        self.body = body if body is not None else {}

    def __str__(self) -> str:
        where = f" [{self.code}{' in ' + self.field if self.field else ''}]" if self.code else ""
        return f"HTTP {self.status}: {self.message}{where}"


def _retry_after(value: Optional[str]) -> Optional[float]:
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


def _is_numpy(value: Any) -> bool:
    return np is not None and isinstance(value, (np.ndarray, np.generic))


def _server_array(name: str, value: Any) -> Any:
    """value as a numpy array of a dtype the server takes, native byte order."""
    a = np.asarray(value)
    if a.dtype in _WIDEN:
        a = a.astype(_WIDEN[a.dtype])
    if a.dtype not in _DATATYPES and a.dtype.newbyteorder("=") in _DATATYPES:
        a = a.astype(a.dtype.newbyteorder("="))  # byte order: native, then little-endian below
    if a.dtype not in _DATATYPES:
        raise TypeError(f"{name}: numpy dtype {a.dtype} is not supported; use float32, float64, "
                        "bool, uint8, int32 or int64")
    return a


def _tensor(name: str, value: Any) -> Tuple[Dict[str, Any], bytes]:
    a = _server_array(name, value)
    raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
    return {"name": name, "shape": list(a.shape), "datatype": _DATATYPES[a.dtype],
            "parameters": {"binary_data_size": len(raw)}}, raw


def _flatten(name: str, value: Any) -> Tuple[List[int], List[Any]]:
    """The shape and the row-major values of nested lists (or tuples) of numbers; a ragged
    nesting is a ValueError here rather than a shape_mismatch the server would name less
    precisely."""
    if isinstance(value, (list, tuple)):
        if not value:
            return [0], []
        shapes, flat = [], []
        for item in value:
            shape, values = _flatten(name, item)
            shapes.append(shape)
            flat.extend(values)
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"{name}: ragged nested lists (rows of different shapes)")
        return [len(value)] + shapes[0], flat
    if isinstance(value, bool) or isinstance(value, numbers.Real):
        return [], [value]
    raise TypeError(f"{name}: numbers or nested lists of numbers, not {type(value).__name__}")


def _json_v2_tensor(name: str, value: Any) -> Dict[str, Any]:
    """A v2 input as JSON data, for nested lists without numpy: BOOL when every value is a
    bool, INT64 when every value is an int, else FP64 (the computation's dtype is the
    request's "dtype" parameter either way)."""
    shape, flat = _flatten(name, value)
    if flat and all(isinstance(v, bool) for v in flat):
        datatype = "BOOL"
    elif all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in flat):
        datatype = "INT64"
    else:
        datatype, flat = "FP64", [float(v) for v in flat]
    return {"name": name, "shape": shape, "datatype": datatype, "data": flat}


def _reshape(flat: List[Any], shape: Sequence[int]) -> Any:
    """Nested lists of `shape` from row-major values."""
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = len(flat) // shape[0] if shape[0] else 0
    return [_reshape(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def _json_tensor(name: str, value: Any) -> Any:
    """A tensor of a JSON request: numpy arrays (and numpy scalars) as base64 of their
    little-endian bytes, nested lists and Python numbers as they are."""
    if _is_numpy(value):
        a = _server_array(name, value)
        raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
        return {"shape": list(a.shape), "dtype": np.dtype(a.dtype).name,
                "b64": base64.b64encode(raw).decode("ascii")}
    return value


def _when(name: str, value: Any) -> Union[float, int, str]:
    """Unix seconds (int or float) or an RFC 3339 string, from those or an aware datetime."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name}: a naive datetime is ambiguous; give it a tzinfo")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise TypeError(f"{name}: Unix seconds, an RFC 3339 string or an aware datetime")
    return float(value) if _is_numpy(value) else value


class Monitor:
    """One monitor of the server, /v1/monitors/{name}: Client.monitor(name). Every method
    raises MasklossError when the server refuses (code "monitor_not_found",
    "monitor_conflict", "invalid_observation", a tensor error of /v1/loss, ...)."""

    def __init__(self, client: "Client", name: str) -> None:
        self.client = client
        self.name = name
        self._path = f"/v1/monitors/{urllib.parse.quote(name, safe='')}"

    def __repr__(self) -> str:
        return f"Monitor({self.name!r})"

    def create(self, config: Mapping[str, Any], force: bool = False) -> Dict[str, Any]:
        """PUT the config (a dict: loss, params, reduction, dtype, classes or num_classes,
        slices, windows, retention, prediction_ttl, drift, export_classes). Returns {"name",
        "config"} with the normalized config; the same config again is no change. A different
        one raises MasklossError code "monitor_conflict" unless force=True, which replaces it
        and clears the monitor's data."""
        # (PUT is idempotent: the same config again changes nothing, so a 503/429 is retried)
        return self.client._call("PUT", self._path + ("?force=true" if force else ""),
                                 dict(config), retry=True)

    @staticmethod
    def _meta(body: Dict[str, Any], time: Optional[When], slice: Optional[Mapping[str, str]],
              id: Optional[str]) -> Dict[str, Any]:
        if time is not None:
            body["time"] = _when("time", time)
        if slice is not None:
            body["slice"] = dict(slice)
        if id is not None:
            body["id"] = id
        return body

    def observe(self, labels: Any = None, logits: Any = None, mask: Any = None,
                time: Optional[When] = None, slice: Optional[Mapping[str, str]] = None,
                id: Optional[str] = None, **tensors: Any) -> Dict[str, Any]:
        """POSTs one observation: the tensors of a /v1/loss request (labels, logits or
        predictions or losses, mask or weights; numpy arrays or nested lists), at `time` (Unix
        seconds, an RFC 3339 string or an aware datetime; default: the server's clock), in
        `slice` (a dict of the config's slice keys to strings), with `id` (an idempotency key:
        a repeat is counted once and answered with "duplicate": True). Returns the answer:
        loss, weighted_sum, denominator, sum_weights, num_nonzero_weights, elements, samples,
        time, bucket, duplicate. Retried on 503/429 only with an `id` (without one, a retry
        whose first try did count would count twice)."""
        body = {}
        for key, value in (("labels", labels), ("logits", logits), ("mask", mask)):
            if value is not None:
                body[key] = _json_tensor(key, value)
        for key, value in tensors.items():
            if value is not None:
                body[key] = _json_tensor(key, value)
        self._meta(body, time, slice, id)
        return self.client._call("POST", self._path + "/observe", body, retry=id is not None)

    def predictions(self, ids: Sequence[str], logits: Any = None, predictions: Any = None,
                    time: Optional[When] = None,
                    slice: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
        """Logs a model's outputs at serving time (late labels): one row of the monitor's
        classes per id of `ids`, as `logits` or `predictions` (numpy arrays or nested lists).
        Returns {"monitor", "stored", "refused", "time", "bucket"}: an id already stored is
        refused for its row, never overwritten. Never retried: a repeat whose first try was
        stored would answer its rows refused."""
        body: Dict[str, Any] = {"ids": list(ids)}
        if logits is not None:
            body["logits"] = _json_tensor("logits", logits)
        if predictions is not None:
            body["predictions"] = _json_tensor("predictions", predictions)
        self._meta(body, time, slice, None)
        return self.client._call("POST", self._path + "/predictions", body, retry=False)

    def labels(self, labels: Any, ids: Optional[Sequence[str]] = None, mask: Any = None,
               time: Optional[When] = None, id: Optional[str] = None) -> Dict[str, Any]:
        """Sends labels of logged predictions as they come: sparse, `labels` a list of
        {"id", "class", "value", "weight"} dicts; or dense, `ids` with `labels` and `mask`
        (numpy arrays or nested lists, one row per id; a position is known where the mask is
        not 0). `time` is when they became known (default now); `id` an idempotency key.
        Returns {"monitor", "applied", "replaced", "unknown", "unknown_ids", "duplicate"}.
        Retried on 503/429 only with an `id`."""
        if ids is None:
            body: Dict[str, Any] = {"labels": [dict(e) for e in labels]}
        else:
            body = {"ids": list(ids), "labels": _json_tensor("labels", labels)}
            if mask is not None:
                body["mask"] = _json_tensor("mask", mask)
        self._meta(body, time, None, id)
        return self.client._call("POST", self._path + "/labels", body, retry=id is not None)

    def show(self) -> Dict[str, Any]:
        """The figures: {"name", "config", "now", "total", "windows", "slices", "drift"}."""
        return self.client._call("GET", self._path)

    def series(self, step: Union[str, float, None] = None, from_: Optional[When] = None,
               to: Optional[When] = None,
               slice: Union[Mapping[str, str], str, Iterable[str], None] = None,
               class_: Union[str, int, None] = None) -> Dict[str, Any]:
        """The loss per `step` (a duration string such as "5m", or seconds) between `from_` and
        `to` (Unix seconds, RFC 3339 strings or aware datetimes; default the last 24 h), over
        the observations in every slice of `slice` (a dict, or "key=value" strings), or for one
        class (`class_`: a name or an index). Returns {"name", "step", "from", "to", "points"}."""
        query: List[Tuple[str, Any]] = []
        if step is not None:
            if isinstance(step, numbers.Real) and not isinstance(step, bool):
                step = f"{int(step)}s" if float(step).is_integer() else f"{step}s"
            query.append(("step", step))
        if from_ is not None:
            query.append(("from", _when("from_", from_)))
        if to is not None:
            query.append(("to", _when("to", to)))
        items = slice.items() if isinstance(slice, Mapping) else \
            (s.split("=", 1) for s in ([slice] if isinstance(slice, str) else slice or ()))
        for key, value in items:
            query.append(("slice", f"{key}={value}"))
        if class_ is not None:
            query.append(("class", class_))
        path = self._path + "/series"
        if query:
            path += "?" + urllib.parse.urlencode(query)
        return self.client._call("GET", path)

    def delete(self) -> None:
        """Deletes the monitor and its data."""
        self.client._call("DELETE", self._path, retry=True)


class Client:
    """A connection to one maskloss-server: Client("http://host:port").

    `timeout`: seconds to wait to connect and for each read of an answer (a socket timeout:
    TimeoutError). `token`: sent as "Authorization: Bearer <token>" with every request (v1,
    v2 and monitor routes alike), for a server with --auth-file; None reads $MASKLOSS_TOKEN,
    and "" sends none. `cafile`: for https:// URLs, a PEM file of the certificates to trust
    instead of the system's (a self-signed server certificate, or a private CA). HTTPS always
    verifies the certificate and the host name, with TLS 1.2 at least. The token is never
    shown: not in repr(), nor in the messages of the errors raised.

    `retries`: how many times a request answered 429 or 503 (or whose connection failed) is
    sent again, after the answer's Retry-After, or without one after `backoff` seconds
    doubled at each try (between half and all of it, at random, so that clients refused
    together do not come back together). A wait longer than `max_retry_wait` is not waited:
    the MasklossError is raised at once with its retry_after. Only what is safe to repeat is
    retried: inference, reads, PUT and DELETE, observe and labels with an `id` (predictions
    never: a repeat whose first try was stored would answer its rows refused).

    One Client keeps one HTTP/1.1 connection open (keep-alive); use one Client per thread."""

    def __init__(self, url: str = "http://127.0.0.1:8080", timeout: Optional[float] = 60.0,
                 token: Optional[str] = None, cafile: Optional[str] = None, retries: int = 3,
                 backoff: float = 0.5, max_retry_wait: float = 60.0) -> None:
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
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries: a count from 0, not {retries!r}")
        self.retries = retries
        self.backoff = float(backoff)
        self.max_retry_wait = float(max_retry_wait)
        self._token = token
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        port = u.port or (443 if u.scheme == "https" else 80)
        self._conn: http.client.HTTPConnection
        if u.scheme == "https":
            ctx = ssl.create_default_context(cafile=cafile)  # the system's trust without cafile
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            self._conn = http.client.HTTPSConnection(u.hostname or "", port, timeout=timeout,
                                                     context=ctx)
        elif cafile is not None:
            # A cafile says the caller expects TLS: refuse rather than send the token in clear.
            raise ValueError("cafile is for https:// URLs; this one is http://")
        else:
            self._conn = http.client.HTTPConnection(u.hostname or "", port, timeout=timeout)
        self._base = u.path.rstrip("/")
        # (without user:password@, which repr() would show)
        self.url = urllib.parse.urlunsplit((u.scheme, u.netloc.rpartition("@")[2], self._base, "", ""))

    def __repr__(self) -> str:
        return f"Client({self.url!r}{', token=<set>' if self._token else ''})"

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _drop_if_closed(self) -> None:
        """Closes a kept-alive connection the server has closed while it was idle (its
        --connection-timeout): an idle socket that reads as ready holds the end of the stream.
        Checked before sending, so that a request is never sent on it and then sent again."""
        sock = self._conn.sock
        if sock is None:
            return
        try:
            ready, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            ready = [sock]
        if ready:
            self._conn.close()

    def _request_once(self, method: str, path: str, body: Optional[bytes],
                      headers: Dict[str, str], resend: bool) -> Tuple[http.client.HTTPResponse, bytes]:
        """One exchange. A connection lost during it is made again and the request sent once
        more only with `resend` (what is safe to repeat): a request the server has taken may
        have been applied even though its answer never came."""
        self._drop_if_closed()
        for attempt in (0, 1):
            try:
                self._conn.request(method, self._base + path, body=body, headers=headers)
                resp = self._conn.getresponse()
                return resp, resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._conn.close()
                if attempt or not resend:
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
            except (OSError, http.client.HTTPException):
                # (a timeout, a malformed answer: the connection is in no state for the next
                # request, which opens a new one)
                self._conn.close()
                raise
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        return self.backoff * 2 ** attempt * random.uniform(0.5, 1.0)

    def _request(self, method: str, path: str, body: Optional[bytes] = None,
                 headers: Optional[Mapping[str, str]] = None,
                 retry: bool = False) -> Tuple[http.client.HTTPResponse, bytes]:
        """One request's answer; with `retry`, a 429 or 503 (or a connection that failed) is
        sent again up to self.retries times, as the class says."""
        headers = dict(headers or {}, **self._auth)
        attempt = 0
        while True:
            try:
                resp, data = self._request_once(method, path, body, headers, retry)
            except (ConnectionError, http.client.RemoteDisconnected):
                # (refused, reset: a server restarting behind its address; not a timeout,
                # which may mean the server is still computing the first try)
                self._conn.close()
                if not retry or attempt >= self.retries:
                    raise
                time.sleep(min(self._backoff(attempt), self.max_retry_wait))
                attempt += 1
                continue
            if not retry or resp.status not in (429, 503) or attempt >= self.retries:
                return resp, data
            wait = _retry_after(resp.getheader("Retry-After"))
            if wait is None:
                wait = self._backoff(attempt)
            if wait > self.max_retry_wait:
                return resp, data
            time.sleep(wait)
            attempt += 1

    def _raise(self, resp: http.client.HTTPResponse, data: bytes) -> NoReturn:
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
                            _retry_after(resp.getheader("Retry-After")), body)

    def evaluate(self, loss: str, labels: Any = None, logits: Any = None,
                 predictions: Any = None, losses: Any = None, weights: Any = None,
                 reduction: Optional[str] = None, dtype: Optional[str] = None,
                 outputs: Sequence[str] = ("loss",), allow_non_finite: bool = False,
                 **params: Union[str, int, float, bool]) -> Dict[str, Any]:
        """Evaluates `loss` and returns a dict of the requested outputs: numpy arrays (nested
        lists without numpy), with scalars as Python floats (num_nonzero_weights as int). Loss
        parameters (label_smoothing, pos_weight, gamma, ...) are keyword arguments with scalar
        values. Tensors are numpy arrays or nested lists of numbers."""
        parameters: Dict[str, Any] = dict(params)
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
        tensors = [(name, value) for name, value in (
            ("LABELS", labels), ("LOGITS", logits), ("PREDICTIONS", predictions),
            ("LOSSES", losses), ("WEIGHTS", weights)) if value is not None]
        path = f"/v2/models/{urllib.parse.quote(loss, safe='')}/infer"
        if np is None:
            # JSON data both ways: the protocol's plain form, for a Python without numpy.
            doc = {"parameters": parameters,
                   "inputs": [_json_v2_tensor(name, value) for name, value in tensors],
                   "outputs": [{"name": o.upper()} for o in outputs]}
            resp, data = self._request("POST", path, json.dumps(doc, allow_nan=False).encode(),
                                       {"Content-Type": "application/json"}, retry=True)
        else:
            inputs, chunks = [], []
            for name, value in tensors:
                meta, raw = _tensor(name, value)
                inputs.append(meta)
                chunks.append(raw)
            header = json.dumps({
                "parameters": parameters,
                "inputs": inputs,
                "outputs": [{"name": o.upper(), "parameters": {"binary_data": True}} for o in outputs],
            }).encode()
            resp, data = self._request("POST", path, header + b"".join(chunks), {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            }, retry=True)
        if resp.status != 200:
            self._raise(resp, data)
        return self._decode(resp, data)

    @staticmethod
    def _decode(resp: http.client.HTTPResponse, data: bytes) -> Dict[str, Any]:
        hlen_header = resp.getheader("Inference-Header-Content-Length")
        hlen = int(hlen_header) if hlen_header is not None else len(data)
        doc = json.loads(data[:hlen])
        tail = memoryview(data)[hlen:]
        result: Dict[str, Any] = {}
        offset = 0
        for out in doc["outputs"]:
            name = out["name"].lower()
            scalar = int if out["datatype"] in ("INT64", "INT32", "UINT8") else float
            if np is None:
                flat = [scalar(v) if out["datatype"] != "BOOL" else bool(v) for v in out["data"]]
                result[name] = _reshape(flat, out["shape"])
                continue
            dt = _NUMPY[out["datatype"]]
            size = (out.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                arr = np.frombuffer(tail[offset:offset + size], dtype=np.dtype(dt).newbyteorder("<"))
                offset += size
            else:
                arr = np.array(out["data"], dtype=dt)
            arr = arr.reshape(out["shape"]).astype(dt, copy=False)
            if arr.ndim == 0:
                result[name] = int(arr) if out["datatype"] == "INT64" else float(arr)
            else:
                result[name] = arr
        return result

    def loss(self, loss: str, **kwargs: Any) -> Any:
        """The reduced loss as a float (or an array for reduction none)."""
        return self.evaluate(loss, outputs=("loss",), **kwargs)["loss"]

    def batch(self, requests: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
        """POST /v1/batch: `requests` are /v1/loss requests (dicts: "loss", the tensors --
        numpy arrays go as b64, lists as they are -- "reduction", "dtype", "params", ...).
        Returns one answer per request, in order: the /v1/loss response, or the error object
        ({"error", "code", "field"}) of a request that could not be evaluated, which does not
        spoil the others."""
        body = [{k: _json_tensor(k, v) if k in _V1_TENSORS else v for k, v in r.items()}
                for r in requests]
        return self._call("POST", "/v1/batch", {"requests": body}, retry=True)["responses"]

    def _call(self, method: str, path: str, body: Any = None, retry: Optional[bool] = None) -> Any:
        """A JSON request: the parsed answer of a 2xx (None when it has no body), else
        MasklossError. `retry` defaults to whether the method is GET."""
        headers = {"Accept": "application/json"}
        raw = None
        if body is not None:
            raw = json.dumps(body, allow_nan=False).encode()
            headers["Content-Type"] = "application/json"
        resp, data = self._request(method, path, raw, headers,
                                   retry=method == "GET" if retry is None else retry)
        if not 200 <= resp.status < 300:
            self._raise(resp, data)
        return json.loads(data) if data else None

    def monitor(self, name: str) -> Monitor:
        """The monitor `name` (nothing is sent until one of its methods is called)."""
        return Monitor(self, name)

    def monitors(self) -> List[Dict[str, Any]]:
        """Every monitor: a list of {"name", "config"}, sorted by name."""
        return self._call("GET", "/v1/monitors")["monitors"]

    def losses(self) -> List[Dict[str, Any]]:
        """The catalogue: every loss with its parameters, defaults and reductions."""
        return self._call("GET", "/v1/losses")["losses"]

    def ready(self) -> bool:
        """True when the server accepts work (GET /v2/health/ready answers 200)."""
        resp, _ = self._request("GET", "/v2/health/ready")
        return resp.status == 200
