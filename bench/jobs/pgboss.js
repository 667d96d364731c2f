// pg-boss's side of bench/jobs/run.sh: the same two measures as
// jobs_bench.c. node pgboss.js throughput URL N CONC | latency URL SAMPLES
// pg-boss polls (no LISTEN); its shortest polling interval is 0.5 s, and a
// worker waits that long between fetches, so throughput runs CONC workers
// fetching batches of 50 (batchSize 1 gives 2 jobs/s per worker).
const PgBoss = require("pg-boss");

const [mode, url, a, b] = process.argv.slice(2);
const now = () => Number(process.hrtime.bigint()) / 1e6;

async function main() {
  const boss = new PgBoss({ connectionString: url, max: 10 });
  boss.on("error", (e) => console.error(e));
  await boss.start();
  await boss.deleteQueue("noop").catch(() => {});
  await boss.createQueue("noop");
  if (mode === "throughput") {
    const n = Number(a), conc = Number(b);
    for (let i = 0; i < n; i += 1000)
      await boss.insert(Array.from({ length: Math.min(1000, n - i) }, () => ({ name: "noop", data: {} })));
    let done = 0, resolve;
    const finished = new Promise((r) => (resolve = r));
    const t0 = now();
    for (let w = 0; w < conc; w++)
      await boss.work("noop", { batchSize: 50, pollingIntervalSeconds: 0.5 }, async (jobs) => {
        done += jobs.length;
        if (done >= n) resolve();
      });
    await finished;
    const s = (now() - t0) / 1000;
    console.log("pg-boss throughput_jobs_per_s " + Math.round(n / s));
  } else {
    const samples = Number(a);
    const lat = [];
    let resolve;
    const finished = new Promise((r) => (resolve = r));
    // a batch per poll, so jobs enqueued 20 ms apart never queue up behind
    // one another: what is measured is the wait for the next poll
    await boss.work("noop", { batchSize: 100, pollingIntervalSeconds: 0.5 }, async (jobs) => {
      for (const j of jobs) lat.push(Date.now() - j.data.t);
      if (lat.length >= samples) resolve();
    });
    await new Promise((r) => setTimeout(r, 1000));
    for (let i = 0; i < samples; i++) {
      await boss.send("noop", { t: Date.now() });
      await new Promise((r) => setTimeout(r, 20));
    }
    await finished;
    lat.sort((x, y) => x - y);
    console.log("pg-boss latency_p50_ms " + lat[Math.floor(samples / 2)].toFixed(2));
    console.log("pg-boss latency_p99_ms " + lat[Math.floor(samples * 99 / 100)].toFixed(2));
  }
  await boss.stop({ graceful: false, wait: false });
  process.exit(0);
}

main().catch((e) => { console.error(e); process.exit(1); });
