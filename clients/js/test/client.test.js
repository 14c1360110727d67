// The maskloss package against a real maskloss-server: node --test clients/js/test/*.test.js
// with MASKLOSS_SERVER the server's binary (make check sets it). The servers are started on
// free ports (common.js) and killed at the end; expected values come from common.js too.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as maskloss from "../index.js";
import { LABELS, LOGITS, MASK, EXACT, ULP, ce, close, start, killServers } from "./common.js";

const { Client, MasklossError, tensor, OUTPUTS } = maskloss;
const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../../..");
after(killServers);

// A fetch that keeps what went on the wire.
function recorder() {
  const sent = [];
  const fetch = async (url, init) => {
    sent.push({ url, ...init });
    return globalThis.fetch(url, init);
  };
  return { sent, fetch };
}

const url = await start();

test("evaluate: typed arrays as binary v2 tensors, the outputs back as bytes", async () => {
  const { sent, fetch } = recorder();
  const client = new Client(url, { fetch, token: "" });
  const result = await client.evaluate("sigmoid_cross_entropy", {
    labels: tensor(new Float32Array(LABELS), [4, 5]),
    logits: tensor(new Float64Array(LOGITS), [4, 5]),
    mask: tensor(new Uint8Array(MASK), [4, 5], "bool"),
  }, { dtype: "float64", outputs: ["loss", "per_element", "num_nonzero_weights"] });
  assert.ok(Math.abs(result.loss - EXACT) <= 4 * ULP, `loss ${result.loss}, exact ${EXACT}`);
  assert.equal(result.num_nonzero_weights, MASK.filter((m) => m).length);
  assert.deepEqual(result.per_element.shape, [4, 5]);
  assert.ok(result.per_element.data instanceof Float64Array);
  LABELS.forEach((z, i) => close(result.per_element.data[i], ce(z, LOGITS[i]), 1e-15, `per_element[${i}]`));

  // On the wire: a JSON header of Inference-Header-Content-Length bytes, then the tensors'
  // bytes (20 float32, 20 float64, 20 bool) -- no JSON numbers.
  assert.equal(sent.length, 1);
  assert.match(sent[0].url, /\/v2\/models\/sigmoid_cross_entropy\/infer$/);
  const n = Number(sent[0].headers["Inference-Header-Content-Length"]);
  const body = sent[0].body;
  assert.equal(body.length, n + 20 * 4 + 20 * 8 + 20);
  const header = JSON.parse(new TextDecoder().decode(body.subarray(0, n)));
  assert.deepEqual(header.inputs.map((i) => [i.name, i.datatype, i.parameters.binary_data_size]),
    [["LABELS", "FP32", 80], ["LOGITS", "FP64", 160], ["MASK", "BOOL", 20]]);
  assert.ok(header.inputs.every((i) => !("data" in i)));
  assert.deepEqual(Array.from(new Float64Array(body.slice(n + 80, n + 240).buffer)), LOGITS);
});

test("loss: nested arrays as JSON data, parameters and reduction", async () => {
  const client = new Client(url, { token: "" });
  const labels = [[1, 0], [0, 1]];
  const logits = [[0.2, 0.8], [-1.5, 3]];
  const loss = await client.loss("sigmoid_cross_entropy", { labels, logits, mask: [[true, false], [true, true]] },
    { dtype: "float64", reduction: "SUM" });
  close(loss, ce(1, 0.2) + ce(0, -1.5) + ce(1, 3), 1e-15, "SUM");
  // label_smoothing 0.1: labels z(1 - 0.1) + 0.1/2
  const smoothed = await client.loss("sigmoid_cross_entropy", { labels, logits },
    { dtype: "float64", reduction: "SUM", params: { label_smoothing: 0.1 } });
  const s = (z) => z * 0.9 + 0.05;
  close(smoothed, ce(s(1), 0.2) + ce(s(0), 0.8) + ce(s(0), -1.5) + ce(s(1), 3), 1e-15, "smoothed");
});

test("eval and batch: typed arrays go as b64 tensors of the JSON protocol", async () => {
  const { sent, fetch } = recorder();
  const client = new Client(url, { fetch, token: "" });
  const request = {
    loss: "sigmoid_cross_entropy", dtype: "float64",
    labels: tensor(new Int32Array(LABELS), [4, 5]),
    logits: tensor(new Float64Array(LOGITS), [4, 5]),
    mask: tensor(new Uint8Array(MASK), [4, 5], "bool"),
  };
  const answer = await client.eval(request);
  assert.ok(Math.abs(answer.loss - EXACT) <= 4 * ULP, `loss ${answer.loss}`);
  assert.equal(answer.reduction, "SUM_BY_NONZERO_WEIGHTS");
  const wire = JSON.parse(sent[0].body);
  assert.equal(sent[0].headers["Content-Type"], "application/json");
  assert.deepEqual(wire.logits.shape, [4, 5]);
  assert.equal(wire.logits.dtype, "float64");
  // (a copy into an ArrayBuffer of its own: a Buffer may lie anywhere in a shared pool)
  assert.deepEqual(Array.from(new Float64Array(new Uint8Array(Buffer.from(wire.logits.b64, "base64")).buffer)),
    LOGITS);
  assert.equal(wire.labels.dtype, "int32");
  assert.equal(wire.mask.dtype, "bool");
  assert.equal(Buffer.from(wire.mask.b64, "base64").toString("hex"),
    Buffer.from(MASK).toString("hex"));

  // float32 work on the same tensors: float32 rounding, close to the exact value.
  const f32 = await client.eval({ ...request, dtype: "float32", logits: tensor(new Float32Array(LOGITS), [4, 5]) });
  assert.equal(f32.dtype, "float32");
  close(f32.loss, EXACT, 1e-6, "float32");

  const answers = await client.batch([request, { loss: "no_such_loss" }]);
  assert.equal(answers.length, 2);
  assert.ok(Math.abs(answers[0].loss - EXACT) <= 4 * ULP);
  assert.equal(answers[1].code, "unknown_loss");
});

test("errors: MasklossError with status, code and field", async () => {
  const client = new Client(url, { token: "" });
  await assert.rejects(client.eval({ loss: "sigmoid_cross_entropy", labels: [[1, 0]], logits: [[0.2, 0.8, 0.1]] }),
    (e) => e instanceof MasklossError && e.status === 422 && e.code === "shape_mismatch" && e.field === "labels" &&
      /shape \[1, 2\]/.test(e.message));
  await assert.rejects(client.loss("no_such_loss", { labels: [1], logits: [1] }),
    (e) => e instanceof MasklossError && e.status === 404 && e.code === "unknown_loss");
  assert.throws(() => tensor(new Float32Array(3), [2, 2]), TypeError);
  await assert.rejects(client.eval({ loss: "sigmoid_cross_entropy", labels: new Float32Array(2), logits: new Float32Array(2), mask: tensor(new Float32Array(2), [2], "bool") }), TypeError);
  await assert.rejects(client.evaluate("sigmoid_cross_entropy", { labels: new Uint16Array(2), logits: new Float64Array(2), weights: new BigUint64Array(2) }),
    /BigUint64Array is not supported/);
});

test("catalogue and readiness", async () => {
  const client = new Client(url, { token: "" });
  const losses = await client.losses();
  assert.ok(JSON.stringify(losses).includes('"sigmoid_cross_entropy"'));
  assert.equal(await client.ready(), true);
  assert.deepEqual(OUTPUTS.slice(0, 2), ["loss", "per_element"]);
});

test("monitors: create, observe (b64, idempotent by id), show, series, list, delete", async () => {
  const client = new Client(url, { token: "" });
  const m = client.monitor("js.ctr-1");
  const created = await m.create({ loss: "sigmoid_cross_entropy", slices: ["model_version"] });
  assert.equal(created.name, "js.ctr-1");
  assert.equal(created.config.dtype, "float32");
  const logits = [0.2, 0.8, -1, 3];
  const observation = {
    labels: tensor(new Float32Array([1, 0, 1, 1]), [2, 2]),
    logits: tensor(new Float32Array(logits), [2, 2]),
    mask: tensor(new Uint8Array([1, 0, 1, 1]), [2, 2], "bool"),
    slice: { model_version: "7" }, id: "first",
  };
  // float32 work: the inputs as float32 holds them, the mean of the three weighted elements.
  const x = logits.map(Math.fround);
  const want = (ce(1, x[0]) + ce(1, x[2]) + ce(1, x[3])) / 3;
  const first = await m.observe(observation);
  close(first.loss, want, 1e-6, "observe");
  assert.equal(first.duplicate, false);
  assert.equal(first.num_nonzero_weights, 3);
  assert.equal((await m.observe(observation)).duplicate, true);
  const shown = await m.show();
  assert.equal(shown.total.observations, 1);
  close(shown.total.loss, want, 1e-6, "total");
  const series = await m.series({ step: "1m", slice: { model_version: "7" } });
  assert.equal(series.step, 60);
  assert.equal(series.points.length, 1);
  close(series.points[0].loss, want, 1e-6, "series");
  assert.equal((await m.series({ slice: "model_version=8" })).points.length, 0);
  // Dates as RFC 3339: an observation an hour ago, in a series of the last two hours.
  const hourAgo = new Date(Date.now() - 3600e3);
  const late = await m.observe({ ...observation, id: "second", time: hourAgo });
  assert.ok(Math.abs(late.time - hourAgo.getTime() / 1000) < 1e-3, `time ${late.time}`);
  const since = await m.series({ step: 60, from: new Date(Date.now() - 7200e3), to: new Date() });
  assert.equal(since.points.length, 2);
  assert.ok(Math.abs(since.from - (Date.now() / 1000 - 7200)) < 60, `from ${since.from}`);
  assert.deepEqual((await client.monitors()).monitors.map((e) => e.name), ["js.ctr-1"]);
  await assert.rejects(m.create({ loss: "softmax_cross_entropy" }), (e) => e.status === 409 && e.code === "monitor_conflict");
  await m.delete();
  await assert.rejects(m.show(), (e) => e instanceof MasklossError && e.status === 404 && e.code === "monitor_not_found");
});

test("late labels: predictions logged, labels joined later (typed arrays as b64)", async () => {
  const client = new Client(url, { token: "" });
  const m = client.monitor("js.late");
  await m.create({ loss: "sigmoid_cross_entropy", num_classes: 2 });
  const logits = [0.2, 0.8, -1, 3];
  const stored = await m.predictions({ ids: ["a", "b"], logits: tensor(new Float32Array(logits), [2, 2]) });
  assert.equal(stored.stored, 2);
  const labels = { ids: ["b", "a"], labels: tensor(new Uint8Array([1, 1, 1, 0]), [2, 2]),
    mask: tensor(new Uint8Array([1, 1, 1, 0]), [2, 2], "bool"), id: "batch-1" };
  const applied = await m.labels(labels);
  assert.equal(applied.applied, 3);
  assert.equal((await m.labels(labels)).duplicate, true);
  // Row "a": logits 0.2 (label 1), 0.8 (masked); row "b": -1 and 3, both label 1; float32 work.
  const x = logits.map(Math.fround);
  close((await m.show()).total.loss, (ce(1, x[0]) + ce(1, x[2]) + ce(1, x[3])) / 3, 1e-6, "joined");
  await m.delete();
});

test("tokens: Authorization: Bearer, 401 and 403 as MasklossError; Retry-After of a 429", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "maskloss-js-"));
  const evaluator = "js-evaluate-token-0123456789";
  const reader = "js-reader-token-9876543210";
  const sha = (t) => createHash("sha256").update(t).digest("hex");
  fs.writeFileSync(path.join(dir, "tokens"),
    `${sha(evaluator)} ci evaluate\n${sha(reader)} reader monitor:read\n`, { mode: 0o600 });
  try {
    const secured = await start("--auth-file", path.join(dir, "tokens"), "--rate-limit", "0.2");
    const inputs = { labels: new Float32Array([1, 0]), logits: new Float32Array([0.2, 0.8]) };
    const { sent, fetch } = recorder();
    const client = new Client(secured, { token: evaluator, fetch, retries: 0 });
    assert.equal(typeof await client.loss("sigmoid_cross_entropy", inputs), "number");
    assert.equal(sent[0].headers.Authorization, `Bearer ${evaluator}`);
    assert.ok(!JSON.stringify(client).includes(evaluator), "the token shows in JSON.stringify(client)");

    await assert.rejects(new Client(secured, { token: "" }).loss("sigmoid_cross_entropy", inputs),
      (e) => e.status === 401 && e.code === "unauthorized");
    await assert.rejects(new Client(secured, { token: reader }).loss("sigmoid_cross_entropy", inputs),
      (e) => e.status === 403 && e.code === "forbidden" && !e.message.includes(reader));
    assert.throws(() => new Client(secured, { token: "two\nlines" }), TypeError);

    // One request every 5 s on average: a few in a row meet a 429 and its Retry-After.
    let limited = null;
    for (let i = 0; i < 10 && !limited; i++) {
      try {
        await client.loss("sigmoid_cross_entropy", inputs);
      } catch (e) {
        limited = e;
      }
    }
    assert.ok(limited instanceof MasklossError, "no 429 after 10 requests at --rate-limit 0.2");
    assert.equal(limited.status, 429);
    assert.equal(limited.code, "too_many_requests");
    assert.ok(limited.retryAfter > 0 && limited.retryAfter <= 10, `retryAfter ${limited.retryAfter}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("retries: a 429 after its Retry-After, a 503 with backoff; observe and labels only with an id", async () => {
  // One request every 2 s after a first one (Retry-After: 2): each refusal below comes right
  // after an answer emptied the bucket, with 2 s of margin on a loaded machine.
  const limited = await start("--rate-limit", "0.5", "--rate-burst", "1");
  const { sent, fetch } = recorder();
  const client = new Client(limited, { fetch, token: "" });
  const inputs = { labels: [1, 0], logits: [0.2, 0.8] };
  const t0 = Date.now();
  for (let i = 0; i < 3; i++)
    close(await client.loss("sigmoid_cross_entropy", inputs, { dtype: "float64" }), (ce(1, 0.2) + ce(0, 0.8)) / 2, 1e-15, "retried");
  assert.ok(sent.length > 3, `${sent.length} requests for 3 answers: none was a 429`);
  assert.ok(Date.now() - t0 >= 3500, `3 answers in ${Date.now() - t0} ms at one every 2 s`);

  // An observation without an id is not sent again (a repeat would count twice); with one, it is.
  const m = client.monitor("js.retry");
  await m.create({ loss: "sigmoid_cross_entropy" });
  const observation = { labels: [1, 0], logits: [0.2, 0.8] };
  let before = sent.length;
  await assert.rejects(m.observe(observation), (e) => e.status === 429 && e.retryAfter === 2);
  assert.equal(sent.length - before, 1);
  before = sent.length;
  assert.equal((await m.observe({ ...observation, id: "once" })).duplicate, false);
  assert.ok(sent.length - before >= 2, "the observation with an id was not retried");
  await assert.rejects(m.predictions({ ids: ["a"], logits: [[0.2]] }), (e) => e.status === 429);
  assert.equal((await m.show()).total.observations, 1); // (a GET: retried)

  // No retry past the given count, none for a Retry-After longer than maxDelay.
  await assert.rejects(new Client(limited, { token: "", retries: 0 }).losses(), (e) => e.status === 429);
  await assert.rejects(new Client(limited, { token: "", maxDelay: 1500 }).losses(), (e) => e.status === 429);

  // A 503 without Retry-After: backoff, then the answer.
  let refusals = 2;
  const flaky = async (u, init) => refusals-- > 0
    ? new Response('{"error":"not ready","code":"unavailable","field":""}', { status: 503 })
    : globalThis.fetch(u, init);
  assert.equal((await new Client(url, { token: "", fetch: flaky, backoff: 20 }).ready()), true);
  refusals = 3;
  await assert.rejects(new Client(url, { token: "", fetch: flaky, backoff: 20 }).losses(),
    (e) => e.status === 503 && e.code === "unavailable" && e.retryAfter === null);
});

test("HTTPS: a self-signed server trusted with NODE_EXTRA_CA_CERTS, as the README says", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "maskloss-js-"));
  try {
    const cert = path.join(dir, "cert.pem");
    const key = path.join(dir, "key.pem");
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
      "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], { stdio: "ignore", timeout: 60000 });
    const secured = await start("--tls-cert", cert, "--tls-key", key);
    assert.match(secured, /^https:/);
    // (NODE_EXTRA_CA_CERTS is read when a process starts: a process of its own)
    const script = `import { Client } from ${JSON.stringify(path.join(here, "..", "index.js"))};
      const client = new Client(${JSON.stringify(secured)}, { token: "" });
      try {
        console.log(await client.loss("sigmoid_cross_entropy", { labels: [1, 0], logits: [0.2, 0.8] }, { dtype: "float64" }));
      } catch (e) {
        console.log("refused", e.cause?.code ?? e.message);
      }`;
    const run = (env) => execFileSync(process.execPath, ["--input-type=module", "-e", script],
      { env: { ...process.env, ...env }, encoding: "utf8", timeout: 30000 }).trim();
    close(Number(run({ NODE_EXTRA_CA_CERTS: cert })), (ce(1, 0.2) + ce(0, 0.8)) / 2, 1e-15, "over HTTPS");
    assert.match(run({}), /^refused .*(SELF_SIGNED|self.signed)/i);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("index.d.ts declares what index.js exports, and package.json points at both", () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(here, "..", "package.json"), "utf8"));
  assert.equal(pkg.type, "module");
  assert.deepEqual(pkg.dependencies ?? {}, {});
  assert.equal(pkg.exports["."].import, "./index.js");
  assert.equal(pkg.exports["."].types, "./index.d.ts");
  const dts = fs.readFileSync(path.join(here, "..", "index.d.ts"), "utf8");
  const declared = [...dts.matchAll(/^export (?:declare )?(?:class|function|const) (\w+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(declared, Object.keys(maskloss).sort());
  for (const method of Object.getOwnPropertyNames(Client.prototype).filter((n) => n !== "constructor"))
    assert.match(dts, new RegExp(`^\\s+${method}\\(`, "m"), `index.d.ts: no Client.${method}`);
  for (const method of Object.getOwnPropertyNames(maskloss.Monitor.prototype).filter((n) => n !== "constructor"))
    assert.match(dts, new RegExp(`^\\s+${method}\\(`, "m"), `index.d.ts: no Monitor.${method}`);
});

test("README.md's JavaScript example runs as written, importing the package by its name", () => {
  const readme = fs.readFileSync(path.join(root, "README.md"), "utf8");
  const section = readme.split(/^### JavaScript$/m)[1];
  assert.ok(section, "README.md: no ### JavaScript section");
  const code = /```js\n([\s\S]*?)```/.exec(section)[1];
  assert.match(code, /from "maskloss"/);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "maskloss-js-"));
  try {
    fs.mkdirSync(path.join(dir, "node_modules"));
    fs.symlinkSync(path.join(here, ".."), path.join(dir, "node_modules", "maskloss"));
    fs.writeFileSync(path.join(dir, "example.mjs"), code.replaceAll("http://127.0.0.1:8080", url));
    const out = execFileSync(process.execPath, ["example.mjs"], { cwd: dir, encoding: "utf8", timeout: 30000 });
    const printed = out.trim().split("\n").map(Number);
    assert.ok(printed.length >= 1 && Math.abs(printed[0] - EXACT) <= 4 * ULP, `the example printed ${out}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
