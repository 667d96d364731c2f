-- wrk script: POST a valid event with the bench user's bearer token (TOKEN).
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title":"bench event","description":"created by the benchmark",' ..
           '"starts_at":"2031-05-01T09:00:00Z","ends_at":"2031-05-01T10:00:00Z",' ..
           '"location":"room 1","tags":["bench","load"],"classification":"internal",' ..
           '"risk":{"level":"low","score":2},"budget":{"amount":120.5,"currency":"EUR"}}'
