-- wrk script: POST /api/v1/notifications/<id>/read, walking distinct (id, token) pairs.
-- Usage: wrk ... -s bench/markread.lua URL -- PAIRS_FILE THREADS
-- Each wrk thread takes every THREADS-th line of PAIRS_FILE ("<id> <token>"), so no two
-- requests in a run share an id until a thread runs out and wraps (counted in "wrapped").

local next_tid = 0
local threads = {}

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  local nthreads = tonumber(args[2])
  items = {}
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == tid then
      local id, token = line:match("^(%d+) (%S+)$")
      table.insert(items, { path = "/api/v1/notifications/" .. id .. "/read",
                            headers = { Authorization = "Bearer " .. token,
                                        ["Content-Length"] = "0" } })
    end
    i = i + 1
  end
  idx = 0
  wrapped = 0
  non200 = 0
  n4xx = 0
  last_bad = 0
end

function request()
  idx = idx + 1
  if idx > #items then
    idx = 1
    wrapped = wrapped + 1
  end
  local item = items[idx]
  return wrk.format("POST", item.path, item.headers, "")
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    last_bad = status
    if status < 500 then
      n4xx = n4xx + 1
    end
  end
end

function done(summary, latency, requests)
  local wraps, bad, walked, bad4, last = 0, 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    wraps = wraps + (thread:get("wrapped") or 0)
    bad = bad + (thread:get("non200") or 0)
    walked = walked + (thread:get("idx") or 0)
    bad4 = bad4 + (thread:get("n4xx") or 0)
    if (thread:get("last_bad") or 0) ~= 0 then
      last = thread:get("last_bad")
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "non200": %d, "non200_4xx": %d, "last_non200_status": %d, "wrapped": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "p999": %d, "max": %d}}\n',
    summary.requests, summary.duration, bad, bad4, last, wraps,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
