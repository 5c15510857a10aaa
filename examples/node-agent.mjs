// The Node agent in miniature: starts an RTMP ingest for a stream key, reports connects,
// disconnects and the stream's counters as JSON lines, and serves WHEP for the stream.
//
//   npm install ./bindings/node
//   node examples/node-agent.mjs cam1
//   ffmpeg -re -i in.mp4 -c:v libx264 -bf 0 -c:a aac -f flv rtmp://127.0.0.1:1935/live/cam1
//   (a browser watches http://127.0.0.1:8889/whep/cam1)
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let fc;
try {
  fc = require('framecache');
} catch {
  fc = require('../bindings/node/index.js');
}

const key = process.argv[2] || 'cam1';
const say = (o) => process.stdout.write(JSON.stringify({ t: new Date().toISOString(), ...o }) + '\n');

fc.setLogger((level, target, message) => say({ log: message, level }), 3);
const ingest = new fc.Ingest();
ingest.onEvent((e) => say({ event: e.kind, key, input: e.input, reason: e.reason, width: e.width, height: e.height }));
ingest.registerKey(key, key);
const rtmp = ingest.listen(process.env.RTMP || 'rtmp://127.0.0.1:1935');
const whep = new fc.Whep({ ingest });
const http = whep.listen(process.env.WHEP || '127.0.0.1:8889');
say({ listening: { rtmp, whep: `http://${http}/whep/${key}` } });

const timer = setInterval(() => {
  try {
    say({ stats: ingest.stats(key), viewers: whep.stats(key).viewers });
  } catch (e) {
    if (e.code !== 'FC_ERR_NOT_FOUND') throw e; // nothing pushed yet
  }
}, 1000);

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    clearInterval(timer);
    whep.close();
    ingest.close();
    fc.setLogger(null);
    process.exit(0);
  });
}
