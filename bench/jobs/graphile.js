// graphile-worker's side of bench/jobs/run.sh: the same two measures as
// jobs_bench.c. node graphile.js throughput URL N CONC | latency URL SAMPLES
const { run, makeWorkerUtils } = require("graphile-worker");

const [mode, url, a, b] = process.argv.slice(2);
const now = () => Number(process.hrtime.bigint()) / 1e6;

async function main() {
  const utils = await makeWorkerUtils({ connectionString: url });
  await utils.migrate();
  await utils.withPgClient((c) => c.query("DELETE FROM graphile_worker._private_jobs"));
  if (mode === "throughput") {
    const n = Number(a), conc = Number(b);
    await utils.withPgClient((c) =>
      c.query("SELECT graphile_worker.add_jobs(array_agg(ROW('noop', '{}'::json, NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec)) FROM generate_series(1, $1)", [n]));
    let done = 0, t0 = 0, resolve;
    const finished = new Promise((r) => (resolve = r));
    t0 = now();
    const runner = await run({ connectionString: url, concurrency: conc, noHandleSignals: true,
      pollInterval: 1000, logger: quietLogger(),
      taskList: { noop: async () => { if (++done === n) resolve(); } } });
    await finished;
    const s = (now() - t0) / 1000;
    await runner.stop();
    console.log("graphile-worker throughput_jobs_per_s " + Math.round(n / s));
  } else {
    const samples = Number(a);
    const lat = [];
    let resolve;
    const finished = new Promise((r) => (resolve = r));
    const runner = await run({ connectionString: url, concurrency: 4, noHandleSignals: true,
      pollInterval: 1000, logger: quietLogger(),
      taskList: { noop: async (p) => { lat.push(Date.now() - p.t);
        if (lat.length === samples) resolve(); } } });
    await new Promise((r) => setTimeout(r, 1000));
    for (let i = 0; i < samples; i++) {
      await utils.addJob("noop", { t: Date.now() });
      await new Promise((r) => setTimeout(r, 20));
    }
    await finished;
    await runner.stop();
    lat.sort((x, y) => x - y);
    console.log("graphile-worker latency_p50_ms " + lat[Math.floor(samples / 2)].toFixed(2));
    console.log("graphile-worker latency_p99_ms " + lat[Math.floor(samples * 99 / 100)].toFixed(2));
  }
  await utils.release();
}

function quietLogger() {
  const { Logger } = require("graphile-worker");
  return new Logger(() => (level, message) => { if (level === "error") console.error(message); });
}

main().catch((e) => { console.error(e); process.exit(1); });
