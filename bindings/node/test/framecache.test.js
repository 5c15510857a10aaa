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

test('where external buffers are forbidden (Electron), reads copy and stay right', async () => {
  const src = spawn(cli(), ['testsrc', 'camcopy', '--size', '320x240', '--fps', '100', '--frames', '40', '--wait-ms', '2000'], { stdio: 'ignore' });
  const exited = new Promise((r) => src.on('exit', r));
  await waitForSlot('camcopy');
  const child = spawn(process.execPath, [path.join(__dirname, '..', 'test-support', 'copy_reader.js'), 'camcopy'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  assert.strictEqual(await new Promise((r) => child.on('exit', r)), 0);
  assert.strictEqual(await exited, 0);
  const r = JSON.parse(out);
  assert.strictEqual(r.zeroCopy, false);
  assert.ok(r.verified > 0, out);
  assert.strictEqual(r.bad, 0, out);
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

test('a Node agent sees the connect of an ffmpeg RTMP push, reads its packets and gets the log', async (t) => {
  const { execFileSync } = require('node:child_process');
  try { execFileSync('ffmpeg', ['-version'], { stdio: 'ignore' }); } catch (_) { t.skip('no ffmpeg (apt install ffmpeg)'); return; }
  const src = path.join(root, 'push.flv');
  execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'testsrc=size=320x240:rate=25', '-f', 'lavfi', '-i', 'sine', '-t', '2', '-c:v', 'libx264', '-preset', 'ultrafast', '-g', '25', '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-y', src]);
  const logs = [];
  fc.setLogger((level, target, message) => logs.push({ level, target, message }));
  const ing = new fc.Ingest();
  const events = [];
  ing.onEvent((e) => events.push(e));
  // The stream's own observer, with one event per packet.
  const camEvents = [];
  assert.throws(() => ing.onStreamEvent('bad slot', () => {}), { code: 'FC_ERR_BAD_SLOT_ID' });
  ing.onStreamEvent('agentcam', (e) => camEvents.push(e));
  ing.observe({ failures: true, packets: true });
  ing.registerKey('agentcam', 'agentcam');
  assert.throws(() => ing.setPlayAccess({ token: '' }), { code: 'FC_ERR_INVALID_ARG' });
  ing.setPlayAccess({ token: 'agent-viewer', maxPerStream: 4 }); // play needs ?token=agent-viewer
  assert.throws(() => ing.setPlayToken('bad/slot', 'x'), { code: 'FC_ERR_BAD_SLOT_ID' });
  ing.setPlayToken('agent', 'agent-only');
  ing.setPlayToken('agent', null);
  const addr = ing.listen('rtmp://127.0.0.1:0');
  const whep = new fc.Whep({ ingest: ing });
  const waddr = whep.listen('127.0.0.1:0');
  assert.match(waddr, /^127\.0\.0\.1:\d+$/);
  // A stream's own viewer token: the stream then needs it (or the engine's token).
  assert.throws(() => whep.setStreamToken('agentcam', ''), { code: 'FC_ERR_INVALID_ARG' });
  whep.setStreamToken('agentcam', 'agent-watch');
  const post = (tok) => fetch(`http://${waddr}/whep/agentcam`, {
    method: 'POST', headers: { 'Content-Type': 'text/plain', Authorization: `Bearer ${tok}` }, body: 'x',
  }).then((res) => res.status);
  assert.strictEqual(await post('nope'), 401);
  assert.strictEqual(await post('agent-watch'), 415); // admitted: on to the Content-Type check
  // WHIP publishers into the keys, once asked for: off (404), then the key's rules.
  const whip = (key, tok) => fetch(`http://${waddr}/whip/${key}`, {
    method: 'POST', headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${tok}` }, body: 'v=0\r\n',
  }).then((res) => res.status);
  assert.strictEqual(await whip('agentcam', 'x'), 404);
  whep.acceptWhip(ing);
  assert.strictEqual(await whip('agentcam', 'x'), 400); // admitted as far as the offer, which is no SDP
  assert.strictEqual(whep.stats().publishers, 0);
  whep.acceptWhip(null);
  assert.strictEqual(await whip('agentcam', 'x'), 404);
  const push = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re', '-i', src, '-c', 'copy', '-f', 'flv', `rtmp://${addr}/live/agentcam`], { stdio: 'ignore' });
  const pushed = new Promise((r) => push.on('exit', r));
  const until = async (what, f) => {
    for (let i = 0; i < 1500 && !f(); i++) await sleep(10);
    assert.ok(f(), `no ${what}: ${JSON.stringify(events)}`);
  };
  await until('media info', () => events.some((e) => e.kind === 'mediaInfo'));
  assert.strictEqual(events[0].kind, 'connected');
  const info = events.find((e) => e.kind === 'mediaInfo');
  assert.deepStrictEqual([info.width, info.height, info.codecs], [320, 240, [fc.CODEC.h264, fc.CODEC.aac]]);
  const r = new fc.PacketReader('agentcam', { start: 'oldest_keyframe' });
  const first = await r.read({ timeoutMs: 2000 });
  assert.ok(first.keyframe && first.stream === 0);
  assert.ok(r.codecParams(0, first.paramsGen)[1].length > 0, 'SPS/PPS of the push');
  assert.strictEqual(await pushed, 0);
  await until('disconnect', () => events.some((e) => e.kind === 'disconnected'));
  assert.ok(ing.stats('agentcam').packets > 50);
  // Every packet reached the stream's observer, in order, naming its slot.
  const pk = camEvents.filter((e) => e.kind === 'packet');
  assert.strictEqual(pk.length, ing.stats('agentcam').packets);
  assert.ok(camEvents.every((e) => e.slot === 'agentcam'));
  assert.ok(pk[0].keyframe && pk[0].size > 0);
  // A push to an unknown key is reported as refused.
  const bad = spawn('ffmpeg', ['-hide_banner', '-loglevel', 'quiet', '-i', src, '-t', '1', '-c', 'copy', '-f', 'flv', `rtmp://${addr}/live/nokey`], { stdio: 'ignore' });
  await new Promise((r) => bad.on('exit', r));
  await until('refusal', () => events.some((e) => e.kind === 'refused' && /nokey/.test(e.input)));
  assert.ok(logs.some((l) => l.level === 3 && /publish ended/.test(l.message)), JSON.stringify(logs));
  r.close();
  whep.close();
  ing.close();
  fc.setLogger(null);
});

test('an installed library is found through pkg-config; a missing one is a clear error', (t) => {
  const { spawnSync } = require('node:child_process');
  if (spawnSync('pkg-config', ['--version']).status !== 0) { t.skip('pkg-config is not installed'); return; }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fc-node-prefix-'));
  try {
    const prefix = path.join(tmp, 'prefix');
    const profile = path.basename(path.dirname(fs.realpathSync(fc.libraryPath)));
    const inst = spawnSync('bash', [path.join(TOP, 'capi', 'install.sh'), '--no-build', '--profile', profile, '--prefix', prefix], { cwd: TOP, encoding: 'utf8' });
    assert.strictEqual(inst.status, 0, inst.stderr);
    const env = { ...process.env, PKG_CONFIG_PATH: path.join(prefix, 'lib', 'pkgconfig') };
    delete env.FRAMECACHE_LIB;
    const pkg = path.resolve(__dirname, '..');
    const r = spawnSync(process.execPath, ['-e', `const fc = require(${JSON.stringify(pkg)}); console.log(fc.libraryPath, fc.version())`], { env, cwd: tmp, encoding: 'utf8' });
    assert.strictEqual(r.status, 0, r.stderr);
    assert.deepStrictEqual(r.stdout.trim().split(' '), [path.join(prefix, 'lib', 'libframecache.so'), fc.version()]);
    const bad = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(pkg)})`], { env: { ...env, FRAMECACHE_LIB: path.join(tmp, 'nowhere', 'libframecache.so') }, cwd: tmp, encoding: 'utf8' });
    assert.notStrictEqual(bad.status, 0);
    assert.match(bad.stderr, /FC_NO_LIBRARY|libframecache.so not found/);
    assert.match(bad.stderr, /nowhere\/libframecache.so/);
    assert.match(bad.stderr, /FRAMECACHE_LIB/);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
