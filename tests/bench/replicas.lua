-- wrk script (tests/bench/replicas.py): POST bodies to one or more servers, spread over them.
--
--   ADDRS         "host:port,host:port,...": thread i sends to address i modulo their number
--                 (wrk -t3 and three replicas: one thread each), the URL's path on each
--   BODY_FILE     the body; when it holds @ID@, every request gets it replaced by an id of its
--                 own ($RUN-<thread>-<counter>), so that observations with "id" are all new
--   BODY_DIR, BODIES  instead, the bodies $BODY_DIR/1.json .. $BODIES.json in turn (each
--                 thread from its own place in the cycle: they do not send the same one at once)
--   CONTENT_TYPE, IHCL  as post.lua (binary v2 requests)
--
-- Every answer is checked: 200, and for observe "duplicate":false; for labels applied +
-- replaced + unknown = $LABELS when set. A 503 is counted apart (and those whose error names a
-- deadlock between replicas' transactions): the write was refused, nothing of it counted, and a
-- client would retry it. done() prints the sums over the threads on one line, "answers: ok N
-- bad B duplicate D applied A replaced R unknown U unavailable V deadlock K", so that the
-- figures are of work the servers did, not only of 2xx.
local threads = {}
local made = 0
local addrs = nil

function setup(thread)
    if not addrs then
        addrs = {}
        for a in string.gmatch(os.getenv("ADDRS"), "[^,]+") do
            local host, port = a:match("^(.*):(%d+)$")
            table.insert(addrs, wrk.lookup(host, port)[1])
        end
    end
    thread.addr = addrs[made % #addrs + 1]
    thread:set("tid", made)
    made = made + 1
    table.insert(threads, thread)
end

local pre, post, dir_bodies, per, at, n = nil, nil, {}, nil, 0, 0
ok, bad, duplicate, applied, replaced, unknown, unavailable, deadlock = 0, 0, 0, 0, 0, 0, 0, 0

function init(args)
    wrk.method = "POST"
    wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
    local ihcl = os.getenv("IHCL")
    if ihcl then
        wrk.headers["Inference-Header-Content-Length"] = ihcl
    end
    per = tonumber(os.getenv("LABELS") or "")
    local file = os.getenv("BODY_FILE")
    if file then
        local f = assert(io.open(file, "rb"))
        local body = f:read("*a")
        f:close()
        local i, j = body:find("@ID@", 1, true)
        if i then
            pre, post = body:sub(1, i - 1) .. (os.getenv("RUN") or "r") .. "-" .. tid .. "-",
                        body:sub(j + 1)
        else
            wrk.body = body
        end
        return
    end
    local dir = os.getenv("BODY_DIR")
    local count = tonumber(os.getenv("BODIES"))
    for i = 1, count do
        local f = assert(io.open(dir .. "/" .. i .. ".json", "rb"))
        dir_bodies[i] = f:read("*a")
        f:close()
    end
    at = math.floor(tid * count / 4) % count
end

function request()
    if pre then
        n = n + 1
        return wrk.format(nil, nil, nil, pre .. n .. post)
    end
    if #dir_bodies > 0 then
        at = at % #dir_bodies + 1
        return wrk.format(nil, nil, nil, dir_bodies[at])
    end
    return wrk.format()
end

function response(status, headers, body)
    if status == 503 then
        unavailable = unavailable + 1
        if body:find("deadlock", 1, true) then
            deadlock = deadlock + 1
        end
        return
    end
    if status ~= 200 then
        bad = bad + 1
        return
    end
    if pre and not body:find('"duplicate":false', 1, true) then
        duplicate = duplicate + 1
        return
    end
    if per then
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
    ok = ok + 1
end

function done(summary, latency, requests)
    local s = {ok = 0, bad = 0, duplicate = 0, applied = 0, replaced = 0, unknown = 0,
               unavailable = 0, deadlock = 0}
    for _, t in ipairs(threads) do
        for k, _ in pairs(s) do
            s[k] = s[k] + t:get(k)
        end
    end
    io.write(string.format("answers: ok %d bad %d duplicate %d applied %d replaced %d unknown %d "
                           .. "unavailable %d deadlock %d\n", s.ok, s.bad, s.duplicate,
                           s.applied, s.replaced, s.unknown, s.unavailable, s.deadlock))
end
