-- wrk script for userinfo (bench/dpop.py): GET /userinfo with one Authorization header and, for
-- DPoP, a proof per request from a file of pre-made proofs, one per line, each used once (a proof's
-- jti is good once: the server refuses a replay). Arguments after `--`:
--   1: the Authorization header's value ("Bearer <token>" or "DPoP <token>")
--   2: the proofs file, or "-" for none (Bearer)
-- Requests past the end of the proofs file go without a proof and are counted as "exhausted".
-- done() prints one line "BENCH_JSON {...}" that bench/dpop.py reads. Run it with one wrk thread.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local auth, file = args[1], args[2]
  reqs = {}
  if file ~= nil and file ~= "-" then
    for line in io.lines(file) do
      if #line > 0 then
        reqs[#reqs + 1] = wrk.format("GET", "/userinfo", {["Authorization"] = auth,
                                                          ["DPoP"] = line})
      end
    end
  end
  plain = wrk.format("GET", "/userinfo", {["Authorization"] = auth})
  with_proofs = #reqs > 0
  index, ok, other, exhausted = 0, 0, 0, 0
end

function request()
  if not with_proofs then
    return plain
  end
  index = index + 1
  if index > #reqs then
    exhausted = exhausted + 1
    return plain
  end
  return reqs[index]
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local t = {ok = 0, other = 0, exhausted = 0}
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do
      t[k] = t[k] + (thread:get(k) or 0)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "ok": %d, "other": %d, "exhausted": %d, ' ..
    '"socket_errors": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, t.ok, t.other, t.exhausted,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
