#!/usr/bin/python3
"""Writes the seed corpus of the monitors' target (tests/fuzz/corpus/monitor/) and its
dictionary (tests/fuzz/monitor.dict). The first byte of a seed picks the decoder, as
fuzz_monitor.c reads it:

  0 config    PUT /v1/monitors/{name} bodies: the examples and bounds of the monitors' contract
              (every key, defaults, limits, each refusal it names)
  1 duration  "5m", "1h", "30d", and what is not one
  2 time      RFC 3339 times (offsets, fractions, leap days and seconds, the years' ends),
              Unix seconds as JSON, broken forms
  3 combo     slice values separated by NUL bytes (an empty part is an absent value): quotes,
              backslashes, control characters, UTF-8 and bytes that are not
  4 name      monitor names

Deterministic; rewrites the directory. Run with /usr/bin/python3 from anywhere.
"""
import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "monitor")

CONFIG, DURATION, TIME, COMBO, NAME = range(5)

# The examples of the contract (README's monitors section and its wire contract).
FULL = {"loss": "sigmoid_cross_entropy", "params": {"label_smoothing": 0.1},
        "reduction": "SUM_BY_NONZERO_WEIGHTS", "dtype": "float64",
        "classes": ["cat", "dog", "bird"], "slices": ["model_version", "region"],
        "windows": ["5m", "1h", "24h"], "retention": "30d",
        "drift": {"z": 4, "min_weight": 100}, "export_classes": True}

CONFIGS = {
    "full": FULL,
    "minimal": {"loss": "sigmoid_cross_entropy"},
    "normalized": {"loss": "sigmoid_cross_entropy", "params": {},
                   "reduction": "SUM_BY_NONZERO_WEIGHTS", "dtype": "float32", "slices": [],
                   "windows": ["5m", "1h", "24h"], "retention": "30d",
                   "drift": {"z": 4.0, "min_weight": 100.0}, "export_classes": False},
    "nulls": {"loss": "sigmoid_cross_entropy", "params": None, "reduction": None, "dtype": None,
              "classes": None, "num_classes": None, "slices": None, "windows": None,
              "retention": None, "drift": None, "export_classes": None},
    "torch_num_classes": {"loss": "torch.nn.functional.binary_cross_entropy_with_logits",
                          "reduction": "sum", "num_classes": 5, "export_classes": True,
                          "params": {"pos_weight": 2.0}},
    "torch_ce_slices": {"loss": "torch.nn.functional.cross_entropy",
                        "params": {"label_smoothing": 0.05},
                        "slices": ["model_version", "region", "_x9"], "windows": ["15m"]},
    "keras": {"loss": "keras.losses.BinaryCrossentropy", "params": {"from_logits": True},
              "reduction": "mean_with_sample_weight", "classes": ["a"]},
    "keras2_auto": {"loss": "keras2.losses.BinaryCrossentropy", "reduction": "auto"},
    "keras3_focal": {"loss": "keras3.losses.BinaryFocalCrossentropy",
                     "params": {"gamma": 2, "alpha": 0.25, "apply_class_balancing": True}},
    "tf_nn_mean": {"loss": "tf.nn.sigmoid_cross_entropy_with_logits", "reduction": "MEAN",
                   "num_classes": 3},
    "tf_nn_default": {"loss": "tf.nn.weighted_cross_entropy_with_logits"},
    "reduction_none": {"loss": "sigmoid_cross_entropy", "reduction": "NONE"},
    "lowercase_reduction": {"loss": "sigmoid_cross_entropy", "reduction": "sum_over_batch_size"},
    "focal": {"loss": "torchvision.ops.sigmoid_focal_loss", "reduction": "mean",
              "params": {"alpha": -1, "gamma": 0}},
    "asl": {"loss": "ASL.AsymmetricLoss", "params": {"gamma_neg": 4, "gamma_pos": 1, "clip": 0.05,
                                                     "eps": 1e-8}},
    "huber": {"loss": "huber_loss", "params": {"delta": 1.5}, "reduction": "SUM"},
    "log_loss": {"loss": "log_loss", "params": {"epsilon": 1e-7}, "dtype": "float64"},
    "sparse": {"loss": "sparse_softmax_cross_entropy", "num_classes": 3},
    "hours": {"loss": "mean_squared_error", "retention": "12h", "windows": ["1m", "60s", "12h"]},
    "retention_max": {"loss": "absolute_difference", "retention": "3650d",
                      "windows": ["1m", "2m", "5m", "10m", "1h", "1d", "30d", "3650d"]},
    "retention_hours": {"loss": "hinge_loss", "retention": "87600h", "windows": ["90m"]},
    "nine_windows": {"loss": "hinge_loss", "windows": ["1m", "2m", "3m", "4m", "5m", "6m", "7m",
                                                       "8m", "9m"]},
    "window_seconds": {"loss": "sigmoid_cross_entropy", "windows": ["90s"]},
    "window_twice": {"loss": "sigmoid_cross_entropy", "windows": ["1h", "60m"]},
    "window_long": {"loss": "sigmoid_cross_entropy", "retention": "1h", "windows": ["2h"]},
    "retention_minutes": {"loss": "sigmoid_cross_entropy", "retention": "90m"},
    "retention_short": {"loss": "sigmoid_cross_entropy", "retention": "30m"},
    "retention_long": {"loss": "sigmoid_cross_entropy", "retention": "3651d"},
    "classes_and_num": {"loss": "sigmoid_cross_entropy", "classes": ["a"], "num_classes": 1},
    "classes_twice": {"loss": "sigmoid_cross_entropy", "classes": ["a", "b", "a"]},
    "class_long": {"loss": "sigmoid_cross_entropy", "classes": ["x" * 128, "y" * 129]},
    "class_empty": {"loss": "sigmoid_cross_entropy", "classes": [""]},
    "class_utf8": {"loss": "sigmoid_cross_entropy", "classes": ["chat", "caf\u00e9", "\u2028",
                                                                "\"q\\", "\U0001F600"]},
    "num_classes_limit": {"loss": "sigmoid_cross_entropy", "num_classes": 4097},
    "num_classes_max": {"loss": "sigmoid_cross_entropy", "num_classes": 4096},
    "num_classes_fraction": {"loss": "sigmoid_cross_entropy", "num_classes": 2.5},
    "classes_per_sample": {"loss": "softmax_cross_entropy", "num_classes": 3},
    "slice_reserved": {"loss": "sigmoid_cross_entropy", "slices": ["instance"]},
    "slice_bad": {"loss": "sigmoid_cross_entropy", "slices": ["9lives"]},
    "slice_twice": {"loss": "sigmoid_cross_entropy", "slices": ["a", "a"]},
    "slices_nine": {"loss": "sigmoid_cross_entropy",
                    "slices": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]},
    "slice_64": {"loss": "sigmoid_cross_entropy", "slices": ["s" * 64, "t" * 65]},
    "drift_zero": {"loss": "sigmoid_cross_entropy", "drift": {"z": 0}},
    "drift_small": {"loss": "sigmoid_cross_entropy", "drift": {"z": 5e-324, "min_weight": 0}},
    "drift_huge": {"loss": "sigmoid_cross_entropy", "drift": {"z": 1.7976931348623157e308,
                                                              "min_weight": 1e300}},
    "drift_unknown": {"loss": "sigmoid_cross_entropy", "drift": {"zz": 1}},
    "export_alone": {"loss": "sigmoid_cross_entropy", "export_classes": True},
    "unknown_key": {"loss": "sigmoid_cross_entropy", "outputs": ["loss"]},
    "unknown_loss": {"loss": "nope"},
    "no_loss": {"reduction": "SUM"},
    "bad_param": {"loss": "sigmoid_cross_entropy", "params": {"label_smoothing": 2}},
    "unknown_param": {"loss": "sigmoid_cross_entropy", "params": {"nope": 1}},
    "params_tensor": {"loss": "torch.nn.functional.binary_cross_entropy_with_logits",
                      "params": {"pos_weight": [[1.0, 2.5]]}},
    "dtype_bad": {"loss": "sigmoid_cross_entropy", "dtype": "float16"},
    # Late labels: prediction_ttl, the losses that take predictions, and those that cannot.
    "late": {"loss": "sigmoid_cross_entropy", "classes": ["a", "b"], "prediction_ttl": "7d"},
    "late_minutes": {"loss": "sigmoid_cross_entropy", "num_classes": 3, "retention": "1h",
                     "prediction_ttl": "90s"},
    "late_over_retention": {"loss": "log_loss", "num_classes": 2, "retention": "1h",
                            "prediction_ttl": "2h"},
    "late_short": {"loss": "sigmoid_cross_entropy", "num_classes": 2, "prediction_ttl": "59s"},
    "late_no_classes": {"loss": "sigmoid_cross_entropy", "prediction_ttl": "1d"},
    "late_keras": {"loss": "keras.losses.BinaryCrossentropy", "num_classes": 2,
                   "prediction_ttl": "1d"},
    "late_softmax": {"loss": "softmax_cross_entropy", "num_classes": 4, "prediction_ttl": "3h"},
    "late_torch_ce": {"loss": "torch.nn.functional.cross_entropy", "classes": ["x", "y"],
                      "params": {"ignore_index": -1}, "prediction_ttl": "1h"},
    "late_ttl_number": {"loss": "sigmoid_cross_entropy", "num_classes": 2, "prediction_ttl": 60},
}

RAW_CONFIGS = {
    "malformed": b'{"loss": "sigmoid_cross_entropy",',
    "duplicate_key": b'{"loss": "sigmoid_cross_entropy", "loss": "log_loss"}',
    "array": b'["loss"]',
    "integers": b'{"loss":"sigmoid_cross_entropy","num_classes":3,"drift":{"z":1,"min_weight":0}}',
    "big_integer": b'{"loss":"sigmoid_cross_entropy","num_classes":18446744073709551617}',
}

DURATIONS = ["5m", "1h", "24h", "30d", "90s", "0s", "60s", "3650d", "87600h", "1000000000d",
             "10000000000s", "99999999999m", "00000000000000000001h", "5", "m", "-5m", "5M", "5m ",
             "", "1.5h", "1w", " 5m", "5mm", "+5m"]

TIMES = ["2026-12-01T09:00:00Z", "2026-12-01t09:00:00.123z", "2026-12-01 09:30:00+01:00",
         "2024-02-29T23:59:60-05:30", "2023-02-29T00:00:00Z", "2000-02-29T12:00:00Z",
         "1900-02-29T12:00:00Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999+23:59",
         "9999-12-31T23:59:59-23:59", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.5Z",
         "2026-12-01T09:00:00", "2026-12-01T24:00:00Z", "2026-13-01T00:00:00Z",
         "2026-04-31T00:00:00Z", "2026-12-01T09:00:00.Z", "2026-12-01T09:00:00+0100",
         "2026-12-01T09:00:00+24:00", "2026-12-01T09:00:00Z ", "2026-12-01", "2026-12-01T09:00Z",
         "2026-12-01T09:00:00." + "9" * 40 + "Z", "2026-1-01T09:00:00Z",
         "1733043600", "1733043600.5", "0", "-1", "253402300799.9", "253402300800", "1e10",
         "null", "true", "[1]", "\"2026-12-01T09:00:00Z\"", "\"2026-12-01T09:00:00+05:45\"",
         "\"1733043600\"", "-0.0"]

COMBOS = {
    "two": [b"7", b"eu-west"],
    "absent_first": [b"", b"region"],
    "all_absent": [b"", b"", b""],
    "one_empty": [],
    "quotes": [b'a"b', b"c\\d", b"\\u0041", b"\"\"\\\\"],
    "controls": [b"\x01\x1f", b"tab\there", b"nl\nand\rcr", b"\x7f"],
    "utf8": ["caf\u00e9".encode(), "\u2028\u2029".encode(), "\U0001F600".encode(),
             "\ufffd".encode(), "\uffff".encode()],
    "not_utf8": [b"\xff\xfe", b"\xc3", b"\xc3\x28", b"\xe2\x82", b"\xc0\xaf"],
    "surrogate": [b"\xed\xa0\x80", b"\xed\xbf\xbf"],
    "beyond": [b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xf8\x88\x80\x80\x80"],
    "overlong": [b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf"],
    "eight": [b"k%d" % i for i in range(8)],
    "long": [b"v" * 128, b"w" * 129],
}

NAMES = ["m1", "model.v2_eu-west", "a" * 128, "a" * 129, "bad name", "", "x/y", "caf\u00e9",
         "..", "-", "A_Z.0-9"]


def dict_tokens():
    keys = ["loss", "params", "reduction", "dtype", "classes", "num_classes", "slices", "windows",
            "retention", "drift", "z", "min_weight", "export_classes", "prediction_ttl"]
    values = ["float32", "float64", "SUM_BY_NONZERO_WEIGHTS", "SUM_OVER_NONZERO_WEIGHTS",
              "SUM_OVER_BATCH_SIZE", "SUM", "MEAN", "NONE", "ELEMENTWISE", "sum", "mean", "none",
              "sum_over_batch_size", "mean_with_sample_weight", "auto",
              "sigmoid_cross_entropy", "torch.nn.functional.binary_cross_entropy_with_logits",
              "torch.nn.functional.cross_entropy", "keras.losses.BinaryCrossentropy",
              "tf.nn.sigmoid_cross_entropy_with_logits", "sparse_softmax_cross_entropy",
              "label_smoothing", "pos_weight", "ignore_index", "from_logits", "gamma", "alpha",
              "monitor", "class", "le", "quantile", "job", "instance", "5m", "1h", "24h", "30d"]
    quoted = [f'"{t}"' for t in keys + values]
    other = ["true", "false", "null", "[", "]", "{", "}", ",", ":", "-0.0", "1e308", "5e-324",
             "\\u0000", "\\ud800", "\\ufffd", "4096", "4097", "3650d", "87600h", "60s",
             "T", "Z", "+23:59", "-00:00", ".999", ":60", "-02-29", "1970-01-01", "9999-12-31",
             "\xc3\xa9", "\xed\xa0\x80", "\xff", "\x00"]
    return quoted + other


def write_dict(tokens):
    def esc(t):
        b = t.encode("latin-1")
        return "".join(chr(x) if 0x20 <= x < 0x7f and x not in (0x22, 0x5c) else f"\\x{x:02x}"
                       for x in b)
    with open(os.path.join(HERE, "monitor.dict"), "w") as f:
        f.write("# monitor: tokens for libFuzzer (-dict), written by make_monitor_corpus.py\n")
        for t in sorted(set(tokens)):
            f.write(f'"{esc(t)}"\n')


def main():
    cases = {}
    for name, cfg in CONFIGS.items():
        cases[f"config-{name}"] = bytes([CONFIG]) + json.dumps(cfg).encode()
    for name, raw in RAW_CONFIGS.items():
        cases[f"config-{name}"] = bytes([CONFIG]) + raw
    for i, d in enumerate(DURATIONS):
        cases[f"duration-{i:02d}"] = bytes([DURATION]) + d.encode()
    for i, t in enumerate(TIMES):
        cases[f"time-{i:02d}"] = bytes([TIME]) + t.encode()
    for name, parts in COMBOS.items():
        cases[f"combo-{name}"] = bytes([COMBO]) + b"\x00".join(parts)
    for i, n in enumerate(NAMES):
        cases[f"name-{i:02d}"] = bytes([NAME]) + n.encode()
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    for name, data in sorted(cases.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    write_dict(dict_tokens())
    print(f"{len(cases)} files in {OUT}")


if __name__ == "__main__":
    main()
