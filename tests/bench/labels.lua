-- wrk script (tests/bench/late.py): POST the label bodies $BODY_DIR/1.json ..
-- $BODY_DIR/$BODIES.json in turn, each thread from its own place in the cycle. Every answer
-- is checked: 200 and applied + replaced + unknown = $LABELS (the entries of one body);
-- done() prints the sums of the counts over all threads on one line, "labels: applied A
-- replaced R unknown U bad B", so that the figures are of labels the server took, not only
-- of 200s.
local threads = {}
local made = 0

function setup(thread)
    thread:set("tid", made)
    made = made + 1
    table.insert(threads, thread)
end

local bodies = {}
local at = 0
local per = 0
applied, replaced, unknown, bad = 0, 0, 0, 0

function init(args)
    local dir = os.getenv("BODY_DIR")
    local n = tonumber(os.getenv("BODIES"))
    per = tonumber(os.getenv("LABELS"))
    for i = 1, n do
        local f = assert(io.open(dir .. "/" .. i .. ".json", "rb"))
        bodies[i] = f:read("*a")
        f:close()
    end
    -- Threads start half a cycle apart (wrk -t2), so that they do not send the same body at once.
    at = math.floor(tid * n / 2) % n
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
end

function request()
    at = at % #bodies + 1
    return wrk.format(nil, nil, nil, bodies[at])
end

function response(status, headers, body)
    if status ~= 200 then
        bad = bad + 1
        return
    end
    local a = tonumber(body:match('"applied":%s*(%d+)'))
    local r = tonumber(body:match('"replaced":%s*(%d+)'))
    local u = tonumber(body:match('"unknown":%s*(%d+)'))
    if not (a and r and u) or a + r + u ~= per then
        bad = bad + 1
        return
    end
    applied = applied + a
    replaced = replaced + r
    unknown = unknown + u
end

function done(summary, latency, requests)
    local a, r, u, b = 0, 0, 0, 0
    for _, t in ipairs(threads) do
        a = a + t:get("applied")
        r = r + t:get("replaced")
        u = u + t:get("unknown")
        b = b + t:get("bad")
    end
    io.write(string.format("labels: applied %d replaced %d unknown %d bad %d\n", a, r, u, b))
end
