// What the tests share: maskloss-servers on free ports (MASKLOSS_SERVER, the binary: make
// check sets it), killed when the tests end, and the expected values, computed here,
// independently of the server: the note's example exactly (mpmath, 50 digits:
// 0.53753211355555677679...), and per element the textbook formula of sigmoid cross-entropy
// in double precision. (Not a test file: the Makefile runs test/*.test.js.)
import assert from "node:assert/strict";
import { spawn } from "node:child_process";

export const binary = process.env.MASKLOSS_SERVER;
assert.ok(binary, "MASKLOSS_SERVER: the maskloss-server binary to test against");

// The note's masked example (README.md): 4x5 labels, logits and mask.
export const LABELS = [1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1];
export const LOGITS = [0.2, 0.2, 0.2, 0, 0.8, 0, 0.5, 0.5, 0.2, 0, 0, 0.5, 0.1, 0.0, 0.9, 0.9, 0.9, 0.7, 0.1, 0.0];
export const MASK = [1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 1];
export const EXACT = 0.53753211355555677679;
export const ULP = 2 ** -53; // of numbers in [0.5, 1)

/** Sigmoid cross-entropy of one element, the numerically stable textbook form. */
export const ce = (z, x) => Math.max(x, 0) - x * z + Math.log1p(Math.exp(-Math.abs(x)));

export function close(got, want, rel, what) {
  assert.ok(Math.abs(got - want) <= rel * Math.abs(want), `${what}: ${got}, expected ${want} (relative ${rel})`);
}

// No server outlives the tests, whatever they did (exit covers a crash of this process too).
const servers = [];
export function killServers() {
  for (const s of servers) if (s.exitCode === null) s.kill("SIGKILL");
}
process.on("exit", killServers);

/** A server on a free port of 127.0.0.1 with `args`; resolves to its URL once its banner is
 * printed. Its environment has no MASKLOSS_* variable of ours. */
export function start(...args) {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("MASKLOSS_")));
  const child = spawn(binary, ["--port", "0", "--state", ":memory:", ...args],
    { env, stdio: ["ignore", "pipe", "inherit"] });
  servers.push(child);
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`no banner from ${binary}: ${out}`)), 30000);
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const m = /listening on (https?:\/\/\S+:\d+) /.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    child.on("exit", (code) => reject(new Error(`${binary} exited with ${code}: ${out}`)));
  });
}
