-- wrk script for the token endpoint: POST /token with a polling grant (qr-oidc's QR ticket grant,
-- or RFC 8628's device_code grant for node-oidc-provider), cycling through the tickets (device
-- codes) listed in a file, one per line. Arguments after `--`:
--   1: tickets file   2: value of the Authorization header   3: "cycle" or "once"
--   4: number of wrk threads   5: where in the list to start (so that one run goes on where the
--   last one stopped, and no ticket is polled twice within its interval across runs)
--   6: grant_type (default: the QR ticket grant)   7: the parameter carrying the ticket (default
--   "ticket"; "device_code" for the device grant)
-- "cycle" goes round the list again and again (pending polls: each ticket is polled once every
-- len(list) requests); "once" uses every ticket at most once (token issuance: an approved ticket
-- is redeemed once; requests past the end of the list are counted as "exhausted").
-- done() prints one line "BENCH_JSON {...}" that bench/load.py reads.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file, auth, mode = args[1], args[2], args[3]
  local grant = args[6] or "urn:qr-oidc:params:oauth:grant-type:qr-ticket"
  local param = args[7] or "ticket"
  local headers = {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = auth,
  }
  local all = {}
  for line in io.lines(file) do
    if #line > 0 then all[#all + 1] = line end
  end
  -- with several wrk threads each takes its own share of the list (no ticket is shared)
  local nthreads = tonumber(args[4] or "1")
  reqs = {}
  for i = 1, #all do
    if (i - 1) % nthreads == id then
      reqs[#reqs + 1] = wrk.format("POST", "/token", headers,
                                   "grant_type=" .. grant .. "&" .. param .. "=" .. all[i])
    end
  end
  once = (mode == "once")
  index = math.floor(tonumber(args[5] or "0") / nthreads) % math.max(#reqs, 1)
  exhausted, ok, pending, slow, other = 0, 0, 0, 0, 0
  bare_request = wrk.format("POST", "/token", headers, "grant_type=" .. grant .. "&" .. param .. "=x")
end

function request()
  index = index + 1
  if index > #reqs then
    if once then
      exhausted = exhausted + 1
      return bare_request
    end
    index = 1
  end
  return reqs[index]
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  elseif string.find(body, "authorization_pending", 1, true) then
    pending = pending + 1
  elseif string.find(body, "slow_down", 1, true) then
    slow = slow + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local t = {ok = 0, pending = 0, slow = 0, other = 0, exhausted = 0}
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do
      t[k] = t[k] + (thread:get(k) or 0)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "ok": %d, "pending": %d, "slow_down": %d, ' ..
    '"other": %d, "exhausted": %d, "socket_errors": %d, "non_2xx_3xx": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, t.ok, t.pending, t.slow, t.other, t.exhausted,
    e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
