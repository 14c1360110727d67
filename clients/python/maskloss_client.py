"""maskloss_client -- evaluate masked, weighted losses on a maskloss-server from Python.

Standard library plus numpy. Arrays travel as binary tensors over the Open Inference
Protocol (POST /v2/models/{loss}/infer with Triton's binary data extension), so a
1000x1000 batch costs a memcpy, not a million JSON numbers.

    from maskloss_client import Client
    client = Client("http://127.0.0.1:8080")
    loss = client.loss("sigmoid_cross_entropy", labels=y, logits=x, weights=mask)

A Client keeps one HTTP/1.1 connection open; use one Client per thread.
"""
import http.client
import json
import urllib.parse

import numpy as np

__all__ = ["Client", "MasklossError", "OUTPUTS"]

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
    error code ("shape_mismatch", "unknown_loss", ...); `field` the request field at fault."""

    def __init__(self, message, status=None, code=None, field=None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.field = field

    def __str__(self):
        where = f" [{self.code}{' in ' + self.field if self.field else ''}]" if self.code else ""
        return f"HTTP {self.status}: {self.message}{where}"


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


class Client:
    """A connection to one maskloss-server: Client("http://host:port")."""

    def __init__(self, url="http://127.0.0.1:8080", timeout=60.0):
        u = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        if u.scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme {u.scheme!r}")
        cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        self._conn = cls(u.hostname, u.port or (443 if u.scheme == "https" else 80), timeout=timeout)
        self._base = u.path.rstrip("/")

    def close(self):
        self._conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            try:
                self._conn.request(method, self._base + path, body=body, headers=headers or {})
                resp = self._conn.getresponse()
                return resp, resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A keep-alive connection the server closed meanwhile: reconnect once.
                self._conn.close()
                if attempt:
                    raise

    @staticmethod
    def _raise(resp, data):
        try:
            body = json.loads(data)
        except ValueError:
            body = {}
        message = body.get("error") or data.decode(errors="replace") or resp.reason
        raise MasklossError(message, resp.status, body.get("code"), body.get("field"))

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
