// maskloss -- evaluate masked, weighted losses on a maskloss-server from JavaScript.
//
// No dependencies: fetch, typed arrays and base64, so the same module runs on Node 20+ and in
// browsers. Typed arrays travel as bytes -- over the Open Inference Protocol with Triton's
// binary data extension (evaluate, loss), or as base64 `b64` tensors of the JSON protocol
// (eval, batch, monitors) -- never as one JSON number per element.
//
//     import { Client, tensor } from "maskloss";
//     const client = new Client("http://127.0.0.1:8080");
//     const loss = await client.loss("sigmoid_cross_entropy", {
//       labels: tensor(new Float32Array([1, 0, 1, 1]), [2, 2]),
//       logits: tensor(new Float32Array([0.2, 0.8, -1, 3]), [2, 2]),
//       mask: tensor(new Uint8Array([1, 0, 1, 1]), [2, 2], "bool"),
//     });

// Typed array -> the Open Inference Protocol's datatype and the JSON protocol's dtype, for the
// types the server takes.
const KINDS = [
  [Float32Array, "FP32", "float32"],
  [Float64Array, "FP64", "float64"],
  [Uint8Array, "UINT8", "uint8"],
  [Int32Array, "INT32", "int32"],
  [BigInt64Array, "INT64", "int64"],
];
// Types the server does not take, converted without loss first.
const WIDEN = [
  [Int8Array, (a) => Int32Array.from(a)],
  [Int16Array, (a) => Int32Array.from(a)],
  [Uint16Array, (a) => Int32Array.from(a)],
  [Uint8ClampedArray, (a) => new Uint8Array(a.buffer, a.byteOffset, a.length)],
  [Uint32Array, (a) => BigInt64Array.from(a, (v) => BigInt(v))],
];

/** The names of the outputs the server computes (v2's LOSS, PER_ELEMENT, ... in lower case). */
export const OUTPUTS = Object.freeze(["loss", "per_element", "per_sample", "per_class",
  "weighted_sum", "sum_weights", "num_nonzero_weights"]);

// The server's tensors are little-endian bytes; a big-endian host swaps them.
const LITTLE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The server refused a request: `status` (HTTP), `code` ("shape_mismatch", "unauthorized",
 * ...; null on /v2, whose errors carry only a message), `field` (the request field at fault),
 * `retryAfter` (seconds from the Retry-After of a 429 or 503, else null), `body` (the parsed
 * error object, or null). */
export class MasklossError extends Error {
  constructor(message, { status = null, code = null, field = null, retryAfter = null,
    body = null } = {}) {
    super(message);
    this.name = "MasklossError";
    this.status = status;
    this.code = code;
    this.field = field;
    this.retryAfter = retryAfter;
    this.body = body;
  }
}

/** A tensor: flat `data` (a typed array or an array of numbers or booleans) of `shape`; `dtype`
 * "bool" sends a Uint8Array of 0 and 1 as booleans. Without `shape`, a typed array is 1-D. */
export function tensor(data, shape, dtype) {
  const t = { data, shape: shape === undefined ? [data.length] : [...shape] };
  if (dtype !== undefined) t.dtype = dtype;
  if (ArrayBuffer.isView(data) || Array.isArray(data)) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== data.length)
      throw new TypeError(`tensor: shape [${t.shape}] holds ${n} elements, data ${data.length}`);
  }
  return t;
}

function isTensor(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !ArrayBuffer.isView(v) &&
    "data" in v && "shape" in v;
}

// A typed array the server takes, its datatype and dtype; null for anything else.
function typed(name, data, dtype) {
  for (const [type, widen] of WIDEN) if (data instanceof type) data = widen(data);
  for (const [type, datatype, jsonDtype] of KINDS) {
    if (!(data instanceof type)) continue;
    if (dtype === "bool") {
      if (!(data instanceof Uint8Array))
        throw new TypeError(`${name}: dtype "bool" needs a Uint8Array of 0 and 1`);
      return { data, datatype: "BOOL", dtype: "bool" };
    }
    return { data, datatype, dtype: jsonDtype };
  }
  if (ArrayBuffer.isView(data))
    throw new TypeError(`${name}: ${data.constructor.name} is not supported; use Float32Array, ` +
      "Float64Array, Uint8Array, Int32Array or BigInt64Array");
  return null;
}

// The little-endian bytes of a typed array (a view of it on a little-endian host).
function bytesOf(a) {
  const u8 = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (LITTLE || a.BYTES_PER_ELEMENT === 1) return u8;
  const out = new Uint8Array(u8.length);
  const w = a.BYTES_PER_ELEMENT;
  for (let i = 0; i < u8.length; i += w) for (let j = 0; j < w; j++) out[i + j] = u8[i + w - 1 - j];
  return out;
}

function base64(u8) {
  if (typeof globalThis.Buffer === "function")
    return globalThis.Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength).toString("base64");
  let s = "";
  for (let i = 0; i < u8.length; i += 0x8000)
    s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
  return btoa(s);
}

// A tensor of a JSON request (/v1): typed arrays as `b64`, the rest (numbers, nested arrays,
// {shape, data: [...]}) as it is.
function jsonTensor(name, value) {
  if (ArrayBuffer.isView(value)) value = tensor(value);
  if (!isTensor(value)) return value;
  const t = typed(name, value.data, value.dtype);
  if (!t) return { shape: value.shape, data: value.data };
  return { shape: value.shape, dtype: t.dtype, b64: base64(bytesOf(t.data)) };
}

// The tensor fields of /v1/loss requests and monitor observations.
const TENSOR_FIELDS = ["labels", "logits", "predictions", "losses", "weights", "mask"];

function jsonRequest(request) {
  const out = { ...request };
  for (const key of TENSOR_FIELDS) if (out[key] !== undefined) out[key] = jsonTensor(key, out[key]);
  if (out.time instanceof Date) out.time = when(out.time);
  return out;
}

// A time for the server: Unix seconds and RFC 3339 strings as they are, a Date as RFC 3339.
function when(value) {
  return value instanceof Date ? value.toISOString() : String(value);
}

function shapeOf(v) {
  const shape = [];
  while (Array.isArray(v)) {
    shape.push(v.length);
    v = v[0];
  }
  return shape;
}

// One v2 input: typed arrays as binary data (their bytes appended to `chunks`), numbers and
// nested arrays of numbers as JSON data (FP64; booleans BOOL).
function v2Input(name, value, chunks) {
  if (ArrayBuffer.isView(value)) value = tensor(value);
  if (isTensor(value)) {
    const t = typed(name, value.data, value.dtype);
    if (t) {
      const bytes = bytesOf(t.data);
      chunks.push(bytes);
      return { name: name.toUpperCase(), shape: value.shape, datatype: t.datatype,
        parameters: { binary_data_size: bytes.length } };
    }
    value = { shape: value.shape, data: value.data };
  } else {
    value = { shape: shapeOf(value), data: Array.isArray(value) ? value.flat(Infinity) : [value] };
  }
  const bool = value.data.length > 0 && value.data.every((v) => typeof v === "boolean");
  return { name: name.toUpperCase(), shape: value.shape, datatype: bool ? "BOOL" : "FP64",
    data: value.data };
}

const READERS = { FP64: [Float64Array, 8], INT64: [BigInt64Array, 8], FP32: [Float32Array, 4] };

// A v2 output: a number for a scalar (NUM_NONZERO_WEIGHTS too), else {shape, data} with data a
// Float64Array (BigInt64Array for INT64).
function v2Output(out, body, offset) {
  let data;
  const size = out.parameters && out.parameters.binary_data_size;
  if (size !== undefined) {
    const [Type, w] = READERS[out.datatype] || [];
    if (!Type) throw new MasklossError(`unexpected output datatype ${out.datatype}`);
    const raw = body.slice(offset, offset + size); // a copy: aligned, and ours to swap
    if (!LITTLE) raw.set(bytesOf(new Type(raw.buffer)), 0);
    data = new Type(raw.buffer, 0, size / w);
  } else {
    data = out.datatype === "INT64" ? BigInt64Array.from(out.data.flat(Infinity), BigInt)
      : Float64Array.from(out.data.flat(Infinity), Number);
  }
  const value = out.shape.length === 0 ? Number(data[0]) : { shape: out.shape, data };
  return [value, size || 0];
}

function retryAfter(value) {
  if (value === null || value === undefined) return null;
  value = value.trim();
  if (/^\d+$/.test(value)) return Number(value);
  const when = Date.parse(value);
  return Number.isNaN(when) ? null : Math.max(0, (when - Date.now()) / 1000);
}

/** A maskloss-server at `url`. Options: `token` (sent as `Authorization: Bearer`; on Node the
 * default is $MASKLOSS_TOKEN, "" sends none), `timeout` (ms a try, default 60000), `retries`
 * (default 2: a 429 or 503 is tried again that many times, after its Retry-After, else after
 * `backoff` ms doubling each time, jittered; never when Retry-After exceeds `maxDelay` ms),
 * `fetch` (a fetch to use instead of the global one), `headers` (sent with every request).
 * HTTPS uses the platform's trust store (Node: NODE_EXTRA_CA_CERTS=cert.pem for a
 * certificate it lacks). */
export class Client {
  #token;

  constructor(url, { token, timeout = 60000, retries = 2, backoff = 100, maxDelay = 30000, fetch,
    headers = {} } = {}) {
    this.url = String(url).replace(/\/+$/, "");
    if (token === undefined) token = globalThis.process?.env?.MASKLOSS_TOKEN || "";
    // Visible ASCII only: anything else cannot travel in a header as sent.
    if (token && !/^[\x21-\x7e]+$/.test(token))
      throw new TypeError("token: visible ASCII characters only");
    this.#token = token;
    this.timeout = timeout;
    this.retries = retries;
    this.backoff = backoff;
    this.maxDelay = maxDelay;
    this.headers = { ...headers };
    this.fetch = fetch || globalThis.fetch.bind(globalThis);
  }

  /** One HTTP request: {response, bytes}, or a MasklossError. `body`: an object is sent as
   * JSON, a Uint8Array as it is. `retry`: whether a 429 or 503 may be sent again (a request
   * whose repeat changes nothing: GET, PUT, DELETE, evaluations, observations with an id). */
  async request(method, path, body, headers = {}, retry = method !== "POST") {
    const h = { ...this.headers, ...headers };
    if (this.#token) h.Authorization = `Bearer ${this.#token}`;
    let payload;
    if (body instanceof Uint8Array) payload = body;
    else if (body !== undefined) {
      payload = JSON.stringify(body);
      h["Content-Type"] = "application/json";
    }
    for (let attempt = 0; ; attempt++) {
      const response = await this.fetch(this.url + path, {
        method, headers: h, body: payload, signal: AbortSignal.timeout(this.timeout) });
      const bytes = new Uint8Array(await response.arrayBuffer());
      if (response.ok) return { response, bytes };
      const error = this.#error(response, bytes);
      if (!retry || attempt >= this.retries || (error.status !== 429 && error.status !== 503))
        throw error;
      // Retry-After when the server gives it (whole seconds: the bucket's refill), else
      // exponential backoff with full jitter (clients retrying together spread out).
      const delay = error.retryAfter !== null ? error.retryAfter * 1000
        : Math.random() * this.backoff * 2 ** attempt;
      if (delay > this.maxDelay) throw error;
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  #error(response, bytes) {
    let err = null;
    try {
      err = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      // not JSON (a proxy's page): the status says it
    }
    const message = (err && err.error) || `HTTP ${response.status} ${response.statusText}`;
    return new MasklossError(message, { status: response.status, code: (err && err.code) || null,
      field: (err && err.field) ?? null, retryAfter: retryAfter(response.headers.get("Retry-After")),
      body: err });
  }

  async json(method, path, body, retry = method !== "POST") {
    const { bytes } = await this.request(method, path, body, {}, retry);
    return bytes.length ? JSON.parse(new TextDecoder().decode(bytes)) : null;
  }

  /** POST /v2/models/{loss}/infer with the tensors of `inputs` ({labels, logits | predictions
   * | losses, weights | mask}) as binary data and the outputs back as bytes. Options:
   * `reduction`, `dtype` ("float32" | "float64"), `outputs` (names of OUTPUTS; default
   * ["loss"]), `params` (the loss's scalar parameters). Returns {name: value} per output. */
  async evaluate(loss, inputs, { reduction, dtype, outputs = ["loss"], params = {} } = {}) {
    const chunks = [];
    const header = {
      inputs: Object.entries(inputs).filter(([, v]) => v !== undefined)
        .map(([name, value]) => v2Input(name, value, chunks)),
      outputs: outputs.map((name) => ({ name: name.toUpperCase(), parameters: { binary_data: true } })),
      parameters: { ...params },
    };
    if (reduction !== undefined) header.parameters.reduction = reduction;
    if (dtype !== undefined) header.parameters.dtype = dtype;
    const head = new TextEncoder().encode(JSON.stringify(header));
    const body = new Uint8Array(head.length + chunks.reduce((n, c) => n + c.length, 0));
    body.set(head, 0);
    let at = head.length;
    for (const c of chunks) {
      body.set(c, at);
      at += c.length;
    }
    const { response, bytes } = await this.request("POST",
      `/v2/models/${encodeURIComponent(loss)}/infer`, body,
      { "Inference-Header-Content-Length": String(head.length) }, true);
    const length = response.headers.get("Inference-Header-Content-Length");
    const n = length === null ? bytes.length : Number(length);
    const answer = JSON.parse(new TextDecoder().decode(bytes.subarray(0, n)));
    const result = {};
    let offset = n;
    for (const out of answer.outputs) {
      const [value, used] = v2Output(out, bytes, offset);
      result[out.name.toLowerCase()] = value;
      offset += used;
    }
    return result;
  }

  /** The loss alone, a number: evaluate(loss, inputs, options).loss. */
  async loss(loss, inputs, options = {}) {
    return (await this.evaluate(loss, inputs, { ...options, outputs: ["loss"] })).loss;
  }

  /** POST /v1/loss: a request of the JSON protocol, typed-array tensors sent as `b64`. */
  async eval(request) {
    return this.json("POST", "/v1/loss", jsonRequest(request), true);
  }

  /** POST /v1/batch: an answer per request, in order, each a response or an error object. */
  async batch(requests) {
    return (await this.json("POST", "/v1/batch", { requests: requests.map(jsonRequest) }, true)).responses;
  }

  /** GET /v1/losses: the catalogue. */
  async losses() {
    return this.json("GET", "/v1/losses");
  }

  /** GET /readyz: true when the server takes work (false on 503: starting or draining). */
  async ready() {
    try {
      return (await this.json("GET", "/readyz")).ready === true;
    } catch (e) {
      if (e instanceof MasklossError && e.status === 503) return false;
      throw e;
    }
  }

  /** A monitor of the server, /v1/monitors/{name}. */
  monitor(name) {
    return new Monitor(this, name);
  }

  /** GET /v1/monitors: {"monitors": [...]}. */
  async monitors() {
    return this.json("GET", "/v1/monitors");
  }
}

/** One monitor, /v1/monitors/{name}: Client.monitor(name). */
export class Monitor {
  constructor(client, name) {
    this.client = client;
    this.name = name;
    this.path = `/v1/monitors/${encodeURIComponent(name)}`;
  }

  /** PUT the config; `force` replaces a different one (and clears the monitor's data). */
  async create(config, { force = false } = {}) {
    return this.client.json("PUT", this.path + (force ? "?force=true" : ""), config);
  }

  /** POST one observation: the tensors of a /v1/loss request (typed arrays as `b64`), and
   * optional `time` (Unix seconds, an RFC 3339 string or a Date), `slice`, `id` (retried
   * only with one). */
  async observe(observation) {
    // (counted once by its id: with one, a retry cannot count it twice)
    return this.client.json("POST", `${this.path}/observe`, jsonRequest(observation),
      observation.id !== undefined);
  }

  /** POST predictions logged at serving time ({ids, logits | predictions, ...}). */
  async predictions(body) {
    return this.client.json("POST", `${this.path}/predictions`, jsonRequest(body));
  }

  /** POST the labels of logged predictions ({ids, labels, ...}); retried only with an `id`. */
  async labels(body) {
    return this.client.json("POST", `${this.path}/labels`, jsonRequest(body), body.id !== undefined);
  }

  /** GET the monitor's figures. */
  async show() {
    return this.client.json("GET", this.path);
  }

  /** GET the series: `step` (a duration such as "5m", or seconds), `from` and `to` (Unix seconds, RFC 3339 strings or Dates),
   * `slice` (an object or "key=value" strings), `class`. */
  async series({ step, from, to, slice, class: cls } = {}) {
    const q = new URLSearchParams();
    if (step !== undefined) q.append("step", typeof step === "number" ? `${step}s` : step);
    if (from !== undefined) q.append("from", when(from));
    if (to !== undefined) q.append("to", when(to));
    if (cls !== undefined) q.append("class", String(cls));
    const slices = slice === undefined ? [] : Array.isArray(slice) ? slice
      : typeof slice === "string" ? [slice] : Object.entries(slice).map(([k, v]) => `${k}=${v}`);
    for (const s of slices) q.append("slice", s);
    const query = q.toString();
    return this.client.json("GET", `${this.path}/series${query ? "?" + query : ""}`);
  }

  /** DELETE the monitor and its data. */
  async delete() {
    return this.client.json("DELETE", this.path);
  }
}
