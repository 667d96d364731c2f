-- wrk script for bench/db/run.sh: GET /db?id=N with N random in 1..10000
-- (the seeded rows of migrations/postgres/0001_demo_items.sql), a new N
-- for every request. done() prints one BENCH_RESULT line (the numbers
-- `wrk --latency` prints, latencies in microseconds) for run.sh.
--   BENCH_MAX_ID   largest id (default 10000)
--   BENCH_SEED     random seed (default 42; each wrk thread adds its index)

local max_id = tonumber(os.getenv("BENCH_MAX_ID") or "") or 10000
local seed = tonumber(os.getenv("BENCH_SEED") or "") or 42
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  math.randomseed(seed + (tid or 0))
end

function request()
  return wrk.format("GET", "/db?id=" .. math.random(1, max_id))
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local rps = 0
  if secs > 0 then rps = summary.requests / secs end
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"rps":%.2f,' ..
    '"lat_mean_us":%.2f,"lat_stdev_us":%.2f,"lat_max_us":%d,' ..
    '"p50_us":%d,"p75_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes, rps,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75),
    latency:percentile(90), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
