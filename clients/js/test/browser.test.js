// The maskloss package in a browser: Debian's chromium, headless, loads a page that imports
// index.js as a module from another origin than the server's (a maskloss-server with
// --cors-origin for it), evaluates over binary v2 and b64 /v1, meets an error, and writes
// what it got into the page, which chromium prints (--dump-dom). Expected values: common.js.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { LABELS, LOGITS, MASK, EXACT, ULP, ce, close, start, killServers } from "./common.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const chromium = ["chromium", "chromium-browser", "google-chrome"].map((name) =>
  (process.env.PATH || "").split(":").map((dir) => path.join(dir, name)))
  .flat().find((p) => fs.existsSync(p));
after(killServers);

function page(serverUrl) {
  return `<!doctype html><meta charset="utf-8"><pre id="out">pending</pre>
<script type="module">
import { Client, MasklossError, tensor } from "./index.js";
const out = document.getElementById("out");
const got = {};
try {
  const client = new Client(${JSON.stringify(serverUrl)});
  const labels = tensor(new Float32Array(${JSON.stringify(LABELS)}), [4, 5]);
  const logits = tensor(new Float64Array(${JSON.stringify(LOGITS)}), [4, 5]);
  const mask = tensor(new Uint8Array(${JSON.stringify(MASK)}), [4, 5], "bool");
  const r = await client.evaluate("sigmoid_cross_entropy", { labels, logits, mask },
    { dtype: "float64", outputs: ["loss", "per_element", "num_nonzero_weights"] });
  got.v2 = { loss: r.loss, per_element: Array.from(r.per_element.data), nnz: r.num_nonzero_weights };
  got.v1 = await client.eval({ loss: "sigmoid_cross_entropy", labels, logits, mask, dtype: "float64" });
  try {
    await client.eval({ loss: "sigmoid_cross_entropy", labels: [[1, 0]], logits: [[0.2, 0.8, 0.1]] });
  } catch (e) {
    got.error = { isMasklossError: e instanceof MasklossError, status: e.status, code: e.code, field: e.field };
  }
} catch (e) {
  got.failed = String(e);
}
out.textContent = JSON.stringify(got);
</script>`;
}

test("in headless chromium, from another origin (CORS): binary v2, b64 /v1 and an error",
  { skip: !chromium && "no chromium on the PATH" }, async () => {
    // The page's origin: index.js as the package ships it, and the page.
    let html = "";
    const origin = http.createServer((req, res) => {
      if (req.url === "/index.js") {
        res.writeHead(200, { "Content-Type": "text/javascript" });
        res.end(fs.readFileSync(path.join(here, "..", "index.js")));
      } else if (req.url === "/") {
        res.writeHead(200, { "Content-Type": "text/html" });
        res.end(html);
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise((resolve) => origin.listen(0, "127.0.0.1", resolve));
    let dom;
    try {
      const pageUrl = `http://127.0.0.1:${origin.address().port}`;
      const serverUrl = await start("--cors-origin", pageUrl);
      html = page(serverUrl);

      // --virtual-time-budget: the page's time runs on while its fetches are pending, so the
      // DOM is printed after they have answered.
      dom = await new Promise((resolve, reject) => {
        execFile(chromium, ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--virtual-time-budget=10000", "--dump-dom", pageUrl + "/"],
        { timeout: 90000, maxBuffer: 1 << 20 }, (err, stdout, stderr) =>
          err ? reject(new Error(`${chromium}: ${err.message}\n${stderr}`)) : resolve(stdout));
      });
    } finally {
      killServers();
      origin.close();
    }
    const m = /<pre id="out">(.*?)<\/pre>/s.exec(dom);
    assert.ok(m, `no result in the page: ${dom.slice(0, 2000)}`);
    const got = JSON.parse(m[1].replaceAll("&quot;", '"').replaceAll("&amp;", "&"));
    assert.equal(got.failed, undefined, got.failed);
    assert.ok(Math.abs(got.v2.loss - EXACT) <= 4 * ULP, `v2 loss ${got.v2.loss}`);
    assert.equal(got.v2.nnz, 9);
    LABELS.forEach((z, i) => close(got.v2.per_element[i], ce(z, LOGITS[i]), 1e-15, `per_element[${i}]`));
    assert.ok(Math.abs(got.v1.loss - EXACT) <= 4 * ULP, `v1 loss ${got.v1.loss}`);
    assert.equal(got.v1.dtype, "float64");
    assert.deepEqual(got.error, { isMasklossError: true, status: 422, code: "shape_mismatch", field: "labels" });
  });
