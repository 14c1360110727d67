"""End-to-end tests of what a monitor refuses to keep: sums that are not finite (they would
be in every figure for the whole retention; one observation's, or its bucket's with it) and, past --max-slice-values, a new combination of
slice values, but never the observations without a slice."""
import base64
import json

import numpy as np

from common import JSON, expect_error, json_call as call, test
from server import Server, read_checked


def figures(srv, name):
    status, _, got = call(srv, "GET", f"/v1/monitors/{name}")
    assert status == 200, got
    return got["total"]


@test
def monitor_guards(args):
    with Server(args.server, "--state", ":memory:", "--max-slice-values", "1") as srv:
        for name, dtype in (("f64", "float64"), ("f32", "float32")):
            status, _, got = call(srv, "PUT", f"/v1/monitors/{name}",
                                  {"loss": "sigmoid_cross_entropy", "slices": ["v"], "dtype": dtype})
            assert status == 201, got
        one = {"labels": [[1]], "logits": [[1]]}
        # Finite inputs whose sums overflow: log(1 + e^1000) * 1e308 twice.
        big = {"labels": [[1, 1]], "logits": [[-1000, -1000]], "weights": [[1e308, 1e308]]}
        expect_error(call(srv, "POST", "/v1/monitors/f64/observe", big), 422, "invalid_observation",
                     "weights")
        expect_error(call(srv, "POST", "/v1/monitors/f32/observe", big), 422, "non_finite_input",
                     "weights")
        # Each finite, together not: the second is refused by the writer, nothing counted.
        huge = {"labels": [[1]], "logits": [[0]], "weights": [[1e308]]}
        st, _, got = call(srv, "POST", "/v1/monitors/f64/observe", huge)
        assert st == 200, got
        expect_error(call(srv, "POST", "/v1/monitors/f64/observe", huge), 422, "invalid_observation")
        assert figures(srv, "f64")["observations"] == 1
        assert figures(srv, "f64")["sum_weights"] == 1e308
        status, _, got = call(srv, "PUT", "/v1/monitors/f64?force=true",
                              {"loss": "sigmoid_cross_entropy", "slices": ["v"], "dtype": "float64"})
        assert status == 200, got
        for name in ("f64", "f32"):
            expect_error(call(srv, "POST", f"/v1/monitors/{name}/observe",
                              dict(one, allow_non_finite=True)), 422, "invalid_observation",
                         "allow_non_finite")
            expect_error(call(srv, "POST", f"/v1/monitors/{name}/observe",
                              {"labels": [[1]], "logits": [["NaN"]]}), 422, "non_finite_input",
                         "logits")
            assert figures(srv, name)["observations"] == 0, "a refused observation was counted"
        v2 = {"parameters": {"monitor": "f64", "allow_non_finite": True},
              "inputs": [{"name": "LABELS", "datatype": "FP64", "shape": [1, 1], "data": [1]},
                         {"name": "LOGITS", "datatype": "FP64", "shape": [1, 1], "data": [1]}]}
        expect_error(call(srv, "POST", "/v2/models/sigmoid_cross_entropy/infer", v2), 400,
                     "invalid_observation", "parameters.allow_non_finite")

        # --max-slice-values 1: observations without a slice first, then one value, then no more
        # values; observations without a slice are still taken.
        for body, status in ((one, 200), (dict(one, slice={"v": "a"}), 200),
                             (dict(one, slice={"v": "b"}), 422), (one, 200),
                             (dict(one, slice={"v": "a"}), 200)):
            st, _, got = call(srv, "POST", "/v1/monitors/f64/observe", body)
            assert st == status, (body, st, got)
            if st == 422:
                assert got["code"] == "limit_exceeded" and got["field"] == "slice", got
        total = figures(srv, "f64")
        assert total["observations"] == 4, total
    print("    overflowing sums and allow_non_finite refused (v1, v2), nothing counted; the "
          "combination without a slice outside --max-slice-values")


@test
def monitor_slice_class_bound(args):
    """Per-class figures of slices stay bounded: 300 slice values x (3 windows + 1) x 1000
    classes is past the 2^20 entries one answer holds, so the slices come without theirs."""
    with Server(args.server, "--state", ":memory:") as srv:
        C = 1000
        for name, values in (("small", 2), ("wide", 300)):
            status, _, got = call(srv, "PUT", f"/v1/monitors/{name}",
                                  {"loss": "sigmoid_cross_entropy", "num_classes": C, "slices": ["k"]})
            assert status == 201, got
            z = np.zeros((1, C), np.float32)
            t = {"shape": [1, C], "dtype": "float32", "b64": base64.b64encode(z.tobytes()).decode()}
            conn = srv.connect()
            for i in range(values):
                obs = json.dumps({"labels": t, "logits": t, "slice": {"k": str(i)}}).encode()
                conn.request("POST", f"/v1/monitors/{name}/observe", obs, JSON)
                st, _, body, _ = read_checked(conn.getresponse(), "POST", f"/v1/monitors/{name}/observe", JSON, obs)
                assert st == 200, body
            conn.close()
            status, _, got = call(srv, "GET", f"/v1/monitors/{name}")
            assert status == 200, got
            assert len(got["total"]["per_class"]) == C, "the total keeps its classes"
            assert len(got["slices"]) == values, len(got["slices"])
            if name == "small":
                assert "slices_per_class" not in got, got.get("slices_per_class")
                assert len(got["slices"]["k=0"]["windows"]["5m"]["per_class"]) == C
            else:
                assert got["slices_per_class"] is False, got.get("slices_per_class")
                assert all("per_class" not in v["total"] for v in got["slices"].values())
                assert got["slices"]["k=7"]["total"]["observations"] == 1
    print("    2 slice values keep their 1000 classes; 300 give slices_per_class false")


@test
def monitor_class_series_bound(args):
    """export_classes stays bounded: 40 slice values x 2000 classes is past the 65536 per-class
    series one monitor may export, so /metrics leaves them out (and says so), keeping the
    monitor's other counters; 3 values x 2000 classes are exported."""
    with Server(args.server, "--state", ":memory:") as srv:
        C = 2000
        z = np.zeros((1, C), np.float32)
        t = {"shape": [1, C], "dtype": "float32", "b64": base64.b64encode(z.tobytes()).decode()}
        for name, values in (("few", 3), ("many", 40)):
            status, _, got = call(srv, "PUT", f"/v1/monitors/{name}",
                                  {"loss": "sigmoid_cross_entropy", "num_classes": C, "slices": ["k"],
                                   "export_classes": True})
            assert status == 201, got
            for i in range(values):
                st, _, got = call(srv, "POST", f"/v1/monitors/{name}/observe",
                                  {"labels": t, "logits": t, "slice": {"k": str(i)}})
                assert st == 200, got
        status, _, text = call(srv, "GET", "/metrics")
        assert status == 200
        lines = text.splitlines()
        per_class = [ln for ln in lines if ln.startswith("maskloss_monitor_class_weighted_loss_sum{")]
        assert len(per_class) == 3 * C, len(per_class)
        assert all('monitor="few"' in ln for ln in per_class)
        assert any(ln.startswith("# monitor many:") and "left out" in ln for ln in lines)
        assert sum(ln.startswith('maskloss_monitor_observations_total{monitor="many"') for ln in lines) == 40
    print("    3 x 2000 per-class series exported; 40 x 2000 left out with a note")


@test
def monitor_retention_whole_buckets(args):
    """Retention drops whole buckets: with a 3 h retention and hour buckets after 1 h, an event
    inside the retention whose hour starts before it is refused (it was acknowledged, then
    dropped by the next upkeep), and one whose hour starts inside is kept."""
    import time
    with Server(args.server, "--state", ":memory:", "--rollup-after", "1h") as srv:
        status, _, got = call(srv, "PUT", "/v1/monitors/r", {"loss": "sigmoid_cross_entropy",
                                                            "retention": "3h", "windows": ["1h"]})
        assert status == 201, got
        now = time.time()
        edge = now - 3 * 3600
        hour = lambda t: int(t) // 3600 * 3600  # noqa: E731
        inside = hour(edge) + 3600 + 60  # its hour starts inside the retention
        st, _, got = call(srv, "POST", "/v1/monitors/r/observe",
                          {"labels": [[1]], "logits": [[0]], "time": inside})
        assert st == 200 and got["bucket"] == hour(inside), got
        late = edge + 5
        if hour(late) < int(now) - 3 * 3600:  # (not when the retention starts on an hour)
            expect_error(call(srv, "POST", "/v1/monitors/r/observe",
                              {"labels": [[1]], "logits": [[0]], "time": late}),
                         422, "invalid_observation", "time")
        assert figures(srv, "r")["observations"] == 1
    print("    an event in an hour older than the retention refused; one in a kept hour counted")


@test
def monitor_series_times(args):
    """A series' from and to: Unix seconds as digits (a fraction allowed) or RFC 3339; what
    strtod would also take (hex, a sign, spaces, an exponent, a bare dot) is refused."""
    with Server(args.server, "--state", ":memory:") as srv:
        status, _, got = call(srv, "PUT", "/v1/monitors/s", {"loss": "sigmoid_cross_entropy"})
        assert status == 201, got
        for good in ("from=1796000000", "from=1796000000.5", "from=2026-12-01T00:00:00Z",
                     "to=2026-12-01T10:00:00.5%2B01:00"):
            st, _, got = call(srv, "GET", f"/v1/monitors/s/series?{good}")
            assert st == 200, (good, got)
        for bad in ("from=0x10", "from=%2010", "from=1e9", "from=-5", "to=5.", "to=.5", "to=inf"):
            field = bad.split("=")[0]
            expect_error(call(srv, "GET", f"/v1/monitors/s/series?{bad}"), 400, "invalid_query", field)
    print("    4 spellings taken, 7 refused with their field")
