-- wrk script for bench/auth/run.py: POST /api/v1/auth/login with the
-- benchmark user's credentials (BENCH_LOGIN_BODY).
wrk.method = "POST"
wrk.body = os.getenv("BENCH_LOGIN_BODY")
wrk.headers["Content-Type"] = "application/json"
