-- post_batch.lua — wrk: POST one 100-event batch per request
-- (bench/analytics/run.sh writes body.json and passes the token).
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
local body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")

function done(summary, latency, requests)
  -- per-thread counts are not shared back in wrk; the total of non-2xx
  -- is in summary.errors.status
  io.write(string.format("non2xx=%d\n", summary.errors.status))
end
