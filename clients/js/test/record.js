// Test-only: every fetch of this process recorded, one JSON line an exchange, in the file
// $CONTRACT_EXCHANGES, for tests/e2e/contract.py to check against proto/openapi.json (make
// test-js-run). Loaded before the tests with node --import, given in NODE_OPTIONS so that the
// node processes the tests start record too; without the variable it does nothing. (A fetch
// a test scripts itself, which answers without calling the global one, is not recorded: its
// answer is not the server's.)
import fs from "node:fs";

const file = process.env.CONTRACT_EXCHANGES;
if (file) {
  const fetch = globalThis.fetch;
  const bytes = (body) => body === undefined || body === null ? null
    : Buffer.from(typeof body === "string" ? body : body.buffer ? new Uint8Array(body.buffer, body.byteOffset, body.byteLength) : body).toString("base64");
  globalThis.fetch = async (input, init = {}) => {
    const response = await fetch(input, init);
    const answer = Buffer.from(await response.clone().arrayBuffer());
    const url = new URL(String(input instanceof Request ? input.url : input));
    fs.appendFileSync(file, JSON.stringify({
      method: init.method || "GET", path: url.pathname + url.search,
      headers: Object.fromEntries(new Headers(init.headers || {})), body: bytes(init.body),
      status: response.status, response_headers: Object.fromEntries(response.headers),
      response_body: answer.toString("base64"),
    }) + "\n");
    return response;
  };
}
