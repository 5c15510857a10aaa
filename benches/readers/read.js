'use strict';
// The Node reader of benches/bindings.rs (bindings/node over koffi): the same loop as read.c,
// with `await consumer.read()` (a zero-copy view, then intact()) or `readCopy()`.
// usage: node read.js SLOT view|copy
const path = require('node:path');
const fc = require(path.join(__dirname, '..', '..', 'bindings', 'node'));

const now = () => process.hrtime.bigint(); // CLOCK_MONOTONIC, as publish_ns
const cpu = () => { const u = process.cpuUsage(); return BigInt(u.user + u.system) * 1000n; };
const pct = (v, p) => (v.length ? v[Math.floor((p / 100) * (v.length - 1))] : 0n);

(async () => {
  const [slot, how] = process.argv.slice(2);
  const copy = how === 'copy';
  const c = new fc.Consumer(slot, { mode: 'sequential', start: 'newest' });
  const calls = [];
  const lats = [];
  let torn = 0;
  let skipped = 0;
  let first = 0n;
  let last = 0n;
  let cpu0 = 0n;
  let sink = 0;
  console.log('ready');
  for (;;) {
    let f;
    const t0 = now();
    try {
      f = copy ? await c.readCopy({ timeoutMs: 1000 }) : await c.read({ timeoutMs: 1000 });
    } catch (e) {
      if (e.code === 'FC_ERR_WRITER_GONE') break;
      if (e.code === 'FC_ERR_TIMEOUT') continue;
      if (e.code === 'FC_ERR_OVERWRITTEN') { torn++; continue; }
      throw e;
    }
    const t1 = now();
    sink ^= f.data[0] ^ f.data[f.data.length - 1];
    if (!copy && !f.intact()) { torn++; continue; }
    if (first === 0n) { first = t1; cpu0 = cpu(); }
    last = t1;
    skipped += f.skipped;
    calls.push(t1 - t0);
    const pub = BigInt(f.publishNs);
    lats.push(t1 > pub ? t1 - pub : 0n);
  }
  const used = cpu() - cpu0;
  const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
  calls.sort(cmp);
  lats.sort(cmp);
  c.close();
  console.log(`result frames=${calls.length} torn=${torn} skipped=${skipped} first_ns=${first} last_ns=${last} cpu_ns=${used} ` +
    `call_p50=${pct(calls, 50)} call_p99=${pct(calls, 99)} lat_p50=${pct(lats, 50)} lat_p99=${pct(lats, 99)} sink=${sink & 0}`);
})().catch((e) => { console.error(e); process.exit(1); });
