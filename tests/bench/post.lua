-- wrk script: POST the file named by $BODY_FILE to the URL given on the command line, as
-- $CONTENT_TYPE (default application/json), with Inference-Header-Content-Length: $IHCL
-- when set (binary v2 requests), and Authorization: $AUTHORIZATION when set.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
local ihcl = os.getenv("IHCL")
if ihcl then
    wrk.headers["Inference-Header-Content-Length"] = ihcl
end
local auth = os.getenv("AUTHORIZATION")
if auth then
    wrk.headers["Authorization"] = auth
end
