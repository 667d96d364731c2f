-- wrk script: GET with the bench user's bearer token (TOKEN).
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
