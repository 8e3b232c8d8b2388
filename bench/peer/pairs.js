// The peer that bench/compare.sh measures callguard against: npm redis-semaphore (its
// `Semaphore`, over one ioredis connection), N concurrent async workers on this one Node thread,
// each doing acquire+release pairs for a fixed time.
//
//   node pairs.js --port P --callers N [--seconds S] [--warmup S] [--tenant] [--server-time]
//
// --tenant: each pair takes a tenant's semaphore and then the global one (how a user of
//   redis-semaphore would add a per-tenant cap), releasing both.
// --server-time: reads INFO commandstats every 100 ms (on a second connection): the server's
//   microseconds per acquire (EVALSHA), per release (ZREM) and per pair, the median over the
//   windows (a window where the server lost its core to another process counts that time inside
//   a command: the median leaves those out). Nothing else may run on that server meanwhile.
// Prints one JSON line: callers, pairs_per_s, acquire_p50_us, acquire_p99_us and, with
// --server-time, server_acquire_us, server_release_us, server_pair_us.
'use strict';
const Redis = require('ioredis');
const { Semaphore } = require('redis-semaphore');

function options(argv) {
  const o = { port: 6379, callers: 1, seconds: 2, warmup: 0.3, tenant: false, serverTime: false };
  for (let i = 0; i < argv.length; ++i) {
    switch (argv[i]) {
      case '--port': o.port = Number(argv[++i]); break;
      case '--callers': o.callers = Number(argv[++i]); break;
      case '--seconds': o.seconds = Number(argv[++i]); break;
      case '--warmup': o.warmup = Number(argv[++i]); break;
      case '--tenant': o.tenant = true; break;
      case '--server-time': o.serverTime = true; break;
      default: throw new Error(`pairs.js: unknown argument ${argv[i]}`);
    }
  }
  if (!(o.callers >= 1) || !(o.seconds > 0) || !(o.port > 0)) throw new Error('pairs.js: bad arguments');
  return o;
}

const limit = 1000000000; // never reached: every acquire is admitted, as in bench_limiter
const lockTimeout = 7200000; // ms, the same TTL as callguard's default slot TTL
const semaphoreOptions = (id) => ({ identifier: id, lockTimeout, acquireAttemptsLimit: 1, refreshInterval: 0 });

function commandstats(info) { // "cmdstat_evalsha:calls=1,usec=5,..." -> {evalsha: {calls, usec}}
  const stats = {};
  for (const line of info.split('\r\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line);
    if (m) stats[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) };
  }
  return stats;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (v) => {
  if (!v.length) return 0;
  const s = [...v].sort((a, b) => a - b), h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
};

// Per 100 ms window until `o.seconds` after `start`: microseconds per EVALSHA (acquire), per
// ZREM (release), and their sum (a pair).
async function serverWindows(o, start) {
  const admin = new Redis({ host: '127.0.0.1', port: o.port, maxRetriesPerRequest: 0 });
  const zero = { calls: 0, usec: 0 };
  const read = async () => {
    const s = commandstats(await admin.info('commandstats'));
    return { acq: s.evalsha || zero, rel: s.zrem || zero };
  };
  const w = { acquire: [], release: [], pair: [] };
  let last = await read();
  while (Number(process.hrtime.bigint() - start) / 1e9 < o.seconds) {
    await sleep(100);
    const now = await read();
    const ac = now.acq.calls - last.acq.calls, rc = now.rel.calls - last.rel.calls;
    if (ac > 0 && rc > 0) {
      const a = (now.acq.usec - last.acq.usec) / ac, r = (now.rel.usec - last.rel.usec) / rc;
      w.acquire.push(a);
      w.release.push(r);
      w.pair.push(a + r);
    }
    last = now;
  }
  admin.disconnect();
  return w;
}

async function main() {
  const o = options(process.argv.slice(2));
  const client = new Redis({ host: '127.0.0.1', port: o.port, maxRetriesPerRequest: 0 });
  await client.ping();
  const run = `${process.pid}-${Date.now()}`;
  const tenantKey = `peer-${run}-tenant`, globalKey = `peer-${run}`;

  let measuring = false, stopping = false, pairs = 0;
  const samples = [];
  async function worker(w) {
    for (let i = 0; !stopping; ++i) {
      const id = `CA${w.toString(16).padStart(8, '0')}${i.toString(16).padStart(24, '0')}`;
      const sems = o.tenant ? [new Semaphore(client, tenantKey, limit, semaphoreOptions(id))] : [];
      sems.push(new Semaphore(client, globalKey, limit, semaphoreOptions(id)));
      const t0 = process.hrtime.bigint();
      for (const s of sems) if (!(await s.tryAcquire())) throw new Error('pairs.js: acquire refused');
      const took = process.hrtime.bigint() - t0;
      for (let k = sems.length - 1; k >= 0; --k) await sems[k].release();
      if (measuring) {
        ++pairs;
        if (samples.length < 1 << 20) samples.push(Number(took) / 1000);
      }
    }
  }
  const workers = Array.from({ length: o.callers }, (_, w) => worker(w));
  await sleep(o.warmup * 1000);
  measuring = true;
  const start = process.hrtime.bigint();
  const windows = o.serverTime ? await serverWindows(o, start) : (await sleep(o.seconds * 1000), null);
  measuring = false;
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  const out = { callers: o.callers, tenant: o.tenant, pairs_per_s: Math.round(pairs / elapsed) };
  if (windows) {
    const perPair = o.tenant ? 2 : 1; // semaphores per pair
    out.server_acquire_us = +(perPair * median(windows.acquire)).toFixed(2);
    out.server_release_us = +(perPair * median(windows.release)).toFixed(2);
    out.server_pair_us = +(perPair * median(windows.pair)).toFixed(2);
  }
  stopping = true;
  await Promise.all(workers);
  samples.sort((a, b) => a - b);
  const at = (q) => samples.length ? +samples[Math.floor(q * (samples.length - 1))].toFixed(1) : 0;
  out.acquire_p50_us = at(0.5);
  out.acquire_p99_us = at(0.99);
  await client.del(`semaphore:${globalKey}`, `semaphore:${tenantKey}`); // the library prefixes its keys
  client.disconnect();
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
