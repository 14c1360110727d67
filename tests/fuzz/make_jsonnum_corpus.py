#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_jsonnum (tests/fuzz/corpus/jsonnum/) and its dictionary.

The first byte of a seed picks the frame fuzz_jsonnum.c puts the rest in ('W': the logits,
'D': the "data" of {"shape": [2, 2]}, 'B': two requests of a batch); other seeds are whole
documents. Numbers at float64's edges (the largest double and the first that overflows,
the halfway points of subnormals, 2^53 + 1, more than 19 digits), the tokens jansson
refuses, and arrays the scanner must leave to jansson (ragged, empty, too deep, strings).
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "jsonnum")

NUMBERS = [
    "0", "-0", "1", "-1", "0.1", "-0.0", "0e0", "-0.0e-0", "1E-5", "1e+2", "123.456e-7",
    "1e400", "-1e400", "1e-400", "4.9e-324", "5e-324", "2.4703282292062327e-324",
    "2.4703282292062328e-324", "2.2250738585072011e-308", "2.2250738585072012e-308",
    "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308",
    "9007199254740992", "9007199254740993", "9007199254740995", "-9007199254740993",
    "18446744073709551615", "18446744073709551616", "123456789012345678901234567890",
    "1e22", "1e23", "9999999999999999e22", "4503599627370497.5", "0.30000000000000004",
    "1.00000005960464477539", "3.4028235e38", "3.4028236e38", "1.4e-45", "7e-46", "1e-50",
    "0.000000000000000000000000000001", "1" + "0" * 30, "0." + "0" * 40 + "1",
    "3." + "1415926535" * 12, "1e99999999999999999999", "1e-99999999999999999999",
    "2.5", "-2.5e-3", "1.2345678", "-0.0012345678", "true", "false",
]
BAD = ["01", "-01", "1.", ".5", "+1", "-", "1e", "1e+", "1.e5", "0x10", "Infinity", "NaN",
       "null", '"NaN"', '"Infinity"', '"-inf"', "1 2", "1,", "[1", "tru", "truex", "1x"]


def write(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    n = 0
    for i, x in enumerate(NUMBERS + BAD):
        write(f"num-{i:03d}-w", f"W[{x}]")
        write(f"num-{i:03d}-d", f"D[[{x}, 1], [2, {x}]]")
        write(f"num-{i:03d}-b", f"B[{x}, {x}]")
        n += 3
    arrays = {
        "flat": "[1, 2, 3, 4]", "nested": "[[1, 2], [3, 4]]", "ragged": "[[1], [2, 3]]",
        "ragged-deep": "[[[1, 2]], [[3]]]", "deeper": "[[[1]], [2]]", "shallower": "[[1], 2]",
        "empty": "[]", "empty2": "[[], []]", "empty-ragged": "[[], [1]]",
        "rank8": "[" * 8 + "1" + "]" * 8, "rank9": "[" * 9 + "1" + "]" * 9,
        "trailing-comma": "[1, 2,]", "no-comma": "[1 2]", "unclosed": "[1, 2",
        "strings": '[1, "NaN", "Infinity", "-Infinity"]', "null": "[1, null]",
        "object": '[{"a": 1}]', "bools": "[[true, false], [false, true]]",
        "ws": " [ \n\t[ 1 ,\r\n 2 ] , [3,4 ] ] ", "mismatch": "[1, 2, 3]",
        "scalar": "7", "long": "[" + ", ".join(str(i * 0.001) for i in range(600)) + "]",
    }
    for name, a in arrays.items():
        write(f"arr-{name}-w", "W" + a)
        write(f"arr-{name}-d", "D" + a)
        write(f"arr-{name}-b", "B" + a)
    for name, b in {"ok": "AQID", "ok-pad": "AQI=", "short": "AQ", "bad": "AQ*D",
                    "escape": "AQ\\/D", "unicode": "AQ\\u0041D", "nul": "AQ\\u0000D",
                    "ctrl": "AQ\tD", "utf8": "AQ\u00e9D", "quote": 'AQ\\"D', "empty": "",
                    "long": "AAAA" * 1000}.items():
        write(f"b64-{name}-s", "S" + b)
    docs = {
        "note": open(os.path.join(HERE, "..", "..", "examples", "masked-mean.json")).read(),
        "dup-key": '{"loss": "l", "logits": [1], "logits": [2]}',
        "dup-data": '{"loss": "l", "logits": {"shape": [1], "data": [1], "data": [2]}}',
        "escaped-key": '{"loss": "l", "lab\\u0065ls": [1, 2], "logits": [3, 4]}',
        "escaped-string": '{"loss": "l\\"", "logits": [1, 2], "x": "[3, \\"4]"}',
        "both-weights": '{"loss": "l", "weights": [1], "mask": [1]}',
        "no-loss": '{"logits": [1, 2]}',
        "syntax-after": '{"loss": "l",\n "logits": [[1, 2],\n [3, 4]],\n "x": }',
        "syntax-before": '{"loss": "l", "x": ,\n "logits": [1, 2]}',
        "overflow-after": '{"loss": "l", "logits": [1, 2],\n "params": {"gamma": 1e400}}',
        "shape-data": '{"loss": "l", "logits": {"shape": [2, 2], "data": [[1, 2], [3, 4]], '
                      '"dtype": "float64"}, "labels": {"shape": [4], "data": [[0, 1], [1, 0]]}}',
        "shape-bad": '{"loss": "l", "logits": {"shape": [3], "data": [1, 2]}}',
        "unknown-key": '{"loss": "l", "logits": {"shape": [2], "data": [1, 2], "x": 1}}',
        "b64-and-data": '{"loss": "l", "logits": {"shape": [1], "b64": "AAAAAA==", '
                        '"data": [1]}}',
        "batch": '{"requests": [{"loss": "l", "logits": [1, 2]}, 5, {"loss": "m", '
                 '"labels": {"shape": [2], "data": [0, 1]}}, []]}',
        "batch-nested": '{"requests": [{"requests": [{"loss": "l", "logits": [1]}]}]}',
        "not-object": "[1, 2, 3]",
        "utf8-bad": b'{"loss": "l\xff", "logits": [1, 2]}',
        "nul": b'{"loss": "l", "logits": [1, 2\x00]}',
        "trailing": '{"loss": "l", "logits": [1, 2]} x',
        "b64-tensors": '{"loss": "l", "logits": {"shape": [2], "dtype": "float32", "b64": '
                       '"AACAPwAAAEA="}, "labels": {"b64": "AAE=", "shape": [2], "dtype": "bool"}}',
        "b64-not-string": '{"loss": "l", "logits": {"shape": [1], "dtype": "uint8", "b64": 5}}',
        "b64-dup": '{"loss": "l", "logits": {"shape": [1], "dtype": "uint8", "b64": "AA==", '
                   '"b64": "AQ=="}}',
        "b64-batch": '{"requests": [{"loss": "l", "mask": {"shape": [1], "dtype": "uint8", '
                     '"b64": "AQ=="}}]}',
        "params-tensor": '{"loss": "l", "logits": [1, 2], "params": {"pos_weight": [1, 2]}}',
        "outputs": '{"loss": "l", "logits": [1, 2], "outputs": ["per_element"], "dtype": '
                   '"float64", "reduction": "sum", "allow_non_finite": true, "other": [1]}',
    }
    for name, d in docs.items():
        write(f"doc-{name}.json", d)
    tokens = sorted(set(NUMBERS[:30] + ['"labels"', '"logits"', '"predictions"', '"losses"',
                                         '"weights"', '"mask"', '"data"', '"shape"',
                                         '"requests"', '"loss"', '"b64"', '"dtype"',
                                         '"uint8"', '"float32"', "AAAA", "==", "true", "false", "null",
                                         "[", "]", "{", "}", ",", ":", "e-", "E+", ".",
                                         "-0", '\\"']))
    with open(os.path.join(HERE, "jsonnum.dict"), "w") as f:
        f.write("# jsonnum: tokens for libFuzzer (-dict), written by make_jsonnum_corpus.py\n")
        for t in tokens:
            f.write('"' + t.replace("\\", "\\\\").replace('"', "\\x22") + '"\n')


if __name__ == "__main__":
    main()
