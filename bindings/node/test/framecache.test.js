'use strict';
// The Node binding against real peers: the framecache CLI's test source and the library.
const { test } = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');

const TOP = path.resolve(__dirname, '..', '..', '..');
const root = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'fc-node-'));
process.env.FC_SHM_DIR = root;
const fc = require('..');
process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }));

function cli() {
  if (process.env.FRAMECACHE_CLI) return process.env.FRAMECACHE_CLI;
  for (const p of ['debug', 'release']) {
    const c = path.join(TOP, 'target', p, 'framecache');
    if (fs.existsSync(c)) return c;
  }
  throw new Error('the framecache CLI is not built (cargo build)');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitForSlot(id) {
  for (let i = 0; i < 1000; i++) {
    try { return fc.info(id); } catch (e) { if (e.code !== 'FC_ERR_NOT_FOUND') throw e; }
    await sleep(10);
  }
  throw new Error(`slot ${id} never appeared`);
}

// The testsrc pattern (docs/PROTOCOL.md): byte b of row y of plane p in frame seq.
function mismatches(f) {
  let bad = 0;
  for (let p = 0; p < f.offsets.length; p++) {
    const end = p + 1 < f.offsets.length ? f.offsets[p + 1] : f.data.length;
    const rows = (end - f.offsets[p]) / f.strides[p];
    for (let y = 0; y < rows; y++) {
      const row = f.offsets[p] + y * f.strides[p];
      const base = 2 * y + 3 * (f.seq % 256) + 61 * p;
      for (let b = 0; b < f.strides[p]; b++) if (f.data[row + b] !== ((b + base) & 255)) bad++;
    }
  }
  return bad;
}

test('a Node reader verifies every byte of testsrc frames', async () => {
  const src = spawn(cli(), ['testsrc', 'cam', '--size', '320x240', '--fps', '100', '--frames', '60', '--wait-ms', '300'], { stdio: 'ignore' });
  const exited = new Promise((r) => src.on('exit', r));
  await waitForSlot('cam');
  const c = new fc.Consumer('cam', { start: 'oldest' });
  let seen = 0;
  let last = -1;
  for await (const f of c) {
    assert.strictEqual(f.format, 'uyvy422');
    const bad = mismatches(f);
    if (!f.intact()) continue; // overwritten while verified: not to be trusted
    assert.strictEqual(bad, 0, `frame ${f.seq}: ${bad} bytes differ`);
    assert.ok(f.seq > last);
    last = f.seq;
    seen++;
  }
  const st = c.stats();
  c.close();
  assert.strictEqual(await exited, 0);
  assert.ok(seen > 0);
  assert.strictEqual(seen + Number(st.frames_skipped) + Number(st.overwritten), 60, JSON.stringify(st));
});

test('wrong use throws errors with their FC_ERR code', async () => {
  assert.throws(() => new fc.Consumer('../etc/passwd'), (e) => e instanceof fc.FramecacheError && e.code === 'FC_ERR_BAD_SLOT_ID');
  assert.throws(() => new fc.Consumer('nothing-here'), { code: 'FC_ERR_NOT_FOUND' });
  assert.throws(() => new fc.Consumer(42), { code: 'FC_ERR_INVALID_ARG' });
  assert.throws(() => new fc.Consumer('x', { mode: 'sideways' }), { code: 'FC_ERR_INVALID_ARG' });
  assert.throws(() => new fc.Producer('p', { format: 'nope', width: 8, height: 8 }), { code: 'FC_ERR_UNSUPPORTED_FORMAT' });
  const p = new fc.Producer('w', { format: 'uyvy422', width: 64, height: 16 });
  assert.throws(() => new fc.Producer('w', { format: 'uyvy422', width: 64, height: 16 }), { code: 'FC_ERR_BUSY' });
  assert.throws(() => p.write(new Uint8Array(10)), (e) => e.code === 'FC_ERR_INVALID_ARG' && /frame is 10 bytes/.test(e.message));
  const c = new fc.Consumer('w');
  await assert.rejects(c.read({ timeoutMs: 50 }), { code: 'FC_ERR_TIMEOUT' });
  c.close();
  c.close(); // idempotent
  await assert.rejects(c.read({ timeoutMs: 0 }), { code: 'FC_ERR_STATE' });
  assert.throws(() => new fc.PacketReader('w'), { code: 'FC_ERR_NO_PACKET_RING' });
  p.close();
});

test('the event loop keeps running timers while a read waits', async () => {
  const p = new fc.Producer('loop', { format: 'uyvy422', width: 64, height: 16 });
  const c = new fc.Consumer('loop', { start: 'next' });
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  const pending = c.read({ timeoutMs: 5000 });
  await sleep(300);
  const during = ticks;
  p.write(new Uint8Array(64 * 16 * 2).fill(3), 11);
  const f = await pending;
  clearInterval(timer);
  assert.strictEqual(f.pts, 11);
  assert.ok(during >= 10, `only ${during} timer ticks while the read waited`);
  c.close();
  p.close();
});

test('packets with codec parameters', async () => {
  const w = new fc.PacketWriter('pk', [{ codec: 'h264', width: 64, height: 32 }, { codec: 'aac', timebase: [1, 48000], sampleRate: 48000, channels: 2 }], { payloadSize: 1 << 20 });
  assert.strictEqual(w.setCodecParams(0, Buffer.from('sps')), 1);
  w.publish(0, Buffer.from('not a keyframe'), { pts: 0 });
  w.publish(0, Buffer.from('key'), { pts: 3000, keyframe: true });
  const r = new fc.PacketReader('pk');
  w.publish(1, Buffer.from('aac frame'), { pts: 1024 });
  assert.deepStrictEqual(r.streams().map((s) => s.codec), [fc.CODEC.h264, fc.CODEC.aac]);
  const k = await r.read({ timeoutMs: 1000 });
  assert.ok(k.keyframe && Buffer.from(k.data).toString() === 'key' && k.intact());
  assert.deepStrictEqual(r.codecParams(0, k.paramsGen), [1, Buffer.from('sps')]);
  const a = await r.read({ timeoutMs: 1000 });
  assert.strictEqual(a.stream, 1);
  assert.strictEqual(Buffer.from(a.data).toString(), 'aac frame');
  await assert.rejects(r.read({ timeoutMs: 50 }), { code: 'FC_ERR_TIMEOUT' });
  r.close();
  w.close();
});
