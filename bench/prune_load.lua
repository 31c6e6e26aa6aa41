-- wrk script for bench.scale's prune: mark-read first reads, every answer logged with its time.
-- Usage: wrk -tN -cN ... -s bench/prune_load.lua URL -- PAIRS_PREFIX OUT_PREFIX
-- One connection a thread (-t equal to -c), so a thread's request() and response() alternate
-- and the time between them is that request's latency. Thread i walks the "<id> <token>"
-- lines of PAIRS_PREFIX.i and writes "<sent µs>\t<latency µs>\t<status>" lines to
-- OUT_PREFIX.i; sent is CLOCK_MONOTONIC, the clock of Python's time.monotonic(), so the
-- bench can cut the requests into windows around the prune. A request that got no answer
-- (a socket error: wrk reconnects and asks again) is written with latency -1, status 0.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } el_timespec;
int clock_gettime(int clk_id, el_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("el_timespec")

local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

local next_tid = 0
local threads = {}

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

function init(args)
  items = {}
  for line in io.lines(args[1] .. "." .. tid) do
    local id, token = line:match("^(%d+) (%S+)$")
    table.insert(items, { path = "/api/v1/notifications/" .. id .. "/read",
                          headers = { Authorization = "Bearer " .. token,
                                      ["Content-Length"] = "0" } })
  end
  out = io.open(args[2] .. "." .. tid, "w")
  out:setvbuf("line")  -- wrk never closes a thread's state: nothing may wait in a buffer
  idx = 0
  wrapped = 0
  sent = 0
  pending = false
  verified = false
end

function request()
  if tid == 0 and not verified then
    -- wrk builds one request from thread 0's script before it starts, to check the
    -- script; that one is never sent.
    verified = true
    return wrk.format("POST", items[1].path, items[1].headers, "")
  end
  if pending then
    out:write(string.format("%d\t-1\t0\n", sent))
  end
  idx = idx + 1
  if idx > #items then
    idx = 1
    wrapped = wrapped + 1
  end
  local item = items[idx]
  pending = true
  sent = now_us()
  return wrk.format("POST", item.path, item.headers, "")
end

function response(status, headers, body)
  out:write(string.format("%d\t%d\t%d\n", sent, now_us() - sent, status))
  pending = false
end

function done(summary, latency, requests)
  local wraps = 0
  for _, thread in ipairs(threads) do
    wraps = wraps + (thread:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests": %d, "duration_us": %d, "wrapped": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, wraps,
    e.connect, e.read, e.write, e.status, e.timeout))
end
