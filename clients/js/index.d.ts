// Types of the maskloss package (index.js).

/** Typed arrays the server takes as they are; Int8Array, Int16Array, Uint16Array,
 * Uint8ClampedArray and Uint32Array are widened first, without loss. */
export type TypedArray = Float32Array | Float64Array | Uint8Array | Int32Array | BigInt64Array
  | Int8Array | Int16Array | Uint16Array | Uint8ClampedArray | Uint32Array;

/** Nested arrays of numbers or booleans, any depth. */
export type NestedArray = number | boolean | NestedArray[];

/** A tensor as tensor() makes it. */
export interface Tensor {
  data: TypedArray | Array<number | boolean>;
  shape: number[];
  dtype?: "bool";
}

/** What a tensor argument may be: a Tensor, a typed array (1-D), a number or nested arrays. */
export type TensorLike = Tensor | TypedArray | NestedArray;

export type OutputName = "loss" | "per_element" | "per_sample" | "per_class" | "weighted_sum"
  | "sum_weights" | "num_nonzero_weights";

/** The names of the outputs the server computes. */
export declare const OUTPUTS: readonly OutputName[];

/** A tensor: flat `data` of `shape` (a typed array without shape is 1-D); dtype "bool" sends
 * a Uint8Array of 0 and 1 as booleans. Throws TypeError when the shape does not hold data. */
export declare function tensor(data: TypedArray | Array<number | boolean>, shape?: number[],
  dtype?: "bool"): Tensor;

/** The server refused a request. */
export declare class MasklossError extends Error {
  constructor(message: string, details?: {
    status?: number | null; code?: string | null; field?: string | null;
    retryAfter?: number | null; body?: unknown;
  });
  /** The HTTP status. */
  status: number | null;
  /** The machine-readable code ("shape_mismatch", "unauthorized", ...); null on /v2. */
  code: string | null;
  /** The request field at fault. */
  field: string | null;
  /** Seconds the server asked to wait (Retry-After of a 429 or 503), else null. */
  retryAfter: number | null;
  /** The parsed error object, or null. */
  body: unknown;
}

export interface ClientOptions {
  /** Sent as `Authorization: Bearer <token>`; default $MASKLOSS_TOKEN on Node, "" sends none. */
  token?: string;
  /** Milliseconds before a try is aborted (default 60000). */
  timeout?: number;
  /** Tries again after a 429 or 503 (default 2), for requests a repeat does not change. */
  retries?: number;
  /** Without Retry-After, the first wait in ms (default 100), doubling, jittered. */
  backoff?: number;
  /** A Retry-After longer than this (ms, default 30000) is not waited for. */
  maxDelay?: number;
  /** A fetch to use instead of globalThis.fetch. */
  fetch?: typeof globalThis.fetch;
  /** Headers sent with every request. */
  headers?: Record<string, string>;
}

/** The inputs of a loss: labels, and logits, predictions or losses, and weights or mask. */
export interface Inputs {
  labels?: TensorLike;
  logits?: TensorLike;
  predictions?: TensorLike;
  losses?: TensorLike;
  weights?: TensorLike;
  mask?: TensorLike;
}

export interface EvaluateOptions {
  reduction?: string;
  dtype?: "float32" | "float64";
  outputs?: OutputName[];
  /** The loss's scalar parameters (label_smoothing, pos_weight, gamma, ...). */
  params?: Record<string, number | string | boolean>;
}

/** A non-scalar output: FP64 data, INT64 as BigInt64Array. */
export interface OutputTensor {
  shape: number[];
  data: Float64Array | BigInt64Array;
}

export type EvaluateResult = Partial<Record<OutputName, number | OutputTensor>>;

/** A request of the JSON protocol (POST /v1/loss); typed-array tensors travel as `b64`. */
export interface LossRequest extends Inputs {
  loss: string;
  params?: Record<string, unknown>;
  reduction?: string;
  dtype?: "float32" | "float64";
  outputs?: OutputName[];
  allow_non_finite?: boolean;
  [key: string]: unknown;
}

/** A response of the JSON protocol. */
export interface LossResponse {
  loss?: number | string;
  shape: number[];
  loss_name: string;
  reduction: string;
  dtype: string;
  [key: string]: unknown;
}

/** An error object of the JSON protocol (an entry of a batch's answers). */
export interface ErrorObject {
  error: string;
  code: string;
  field: string;
  [key: string]: unknown;
}

export interface Observation extends Inputs {
  /** Unix seconds, an RFC 3339 string or a Date; default the server's clock. */
  time?: number | string | Date;
  slice?: Record<string, string>;
  /** An idempotency key: a repeat is counted once. */
  id?: string;
  [key: string]: unknown;
}

export interface SeriesQuery {
  step?: string | number;
  from?: number | string | Date;
  to?: number | string | Date;
  slice?: Record<string, string> | string | string[];
  class?: string | number;
}

/** A maskloss-server at `url`. */
export declare class Client {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  timeout: number;
  retries: number;
  backoff: number;
  maxDelay: number;
  headers: Record<string, string>;
  /** One HTTP request: an object body goes as JSON, a Uint8Array as it is; `retry` (default:
   * not for POST) whether a 429 or 503 is tried again. */
  request(method: string, path: string, body?: unknown, headers?: Record<string, string>,
    retry?: boolean): Promise<{ response: Response; bytes: Uint8Array }>;
  /** One HTTP request with a JSON answer (null for an empty body). */
  json(method: string, path: string, body?: unknown, retry?: boolean): Promise<any>;
  /** POST /v2/models/{loss}/infer, tensors as binary data; the requested outputs. */
  evaluate(loss: string, inputs: Inputs, options?: EvaluateOptions): Promise<EvaluateResult>;
  /** The loss alone. */
  loss(loss: string, inputs: Inputs, options?: Omit<EvaluateOptions, "outputs">): Promise<number>;
  /** POST /v1/loss. */
  eval(request: LossRequest): Promise<LossResponse>;
  /** POST /v1/batch: an answer per request, in order. */
  batch(requests: LossRequest[]): Promise<Array<LossResponse | ErrorObject>>;
  /** GET /v1/losses. */
  losses(): Promise<any>;
  /** GET /readyz: false while the server starts or drains. */
  ready(): Promise<boolean>;
  monitor(name: string): Monitor;
  /** GET /v1/monitors. */
  monitors(): Promise<{ monitors: Array<{ name: string; config: Record<string, unknown> }> }>;
}

/** One monitor, /v1/monitors/{name}. */
export declare class Monitor {
  constructor(client: Client, name: string);
  readonly client: Client;
  readonly name: string;
  readonly path: string;
  create(config: Record<string, unknown>, options?: { force?: boolean }):
    Promise<{ name: string; config: Record<string, unknown> }>;
  observe(observation: Observation): Promise<Record<string, any>>;
  predictions(body: Record<string, unknown>): Promise<Record<string, any>>;
  labels(body: Record<string, unknown>): Promise<Record<string, any>>;
  show(): Promise<Record<string, any>>;
  series(query?: SeriesQuery): Promise<{ name: string; step: number; from: number; to: number;
    points: Array<Record<string, any>> }>;
  delete(): Promise<null>;
}
