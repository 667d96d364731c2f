-- wrk script: 16 pipelined GETs per write, so the load generator stops
-- being the bottleneck and the server's own cost per request shows.
-- Usage: wrk -t1 -c64 -d10s -s bench/pipeline.lua http://127.0.0.1:PORT/hello
local depth = tonumber(os.getenv("PIPELINE") or "16")
init = function(args)
  local r = {}
  for i = 1, depth do r[i] = wrk.format(nil, wrk.path) end
  req = table.concat(r)
end
request = function() return req end
