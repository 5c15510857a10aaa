'use strict';
// Run by the tests as a child process: reads testsrc slot argv[2] as an Electron-like runtime
// would, where koffi.view throws because external buffers are forbidden, and prints a JSON
// summary. `mismatches` is the testsrc pattern check of framecache.test.js.
const koffi = require('koffi');
koffi.view = () => { throw new Error('External buffers are not allowed'); };
const fc = require('..');

(async () => {
  const c = new fc.Consumer(process.argv[2], { start: 'oldest' });
  let verified = 0;
  let bad = 0;
  for await (const f of c) {
    let wrong = 0;
    for (let p = 0; p < f.offsets.length; p++) {
      const end = p + 1 < f.offsets.length ? f.offsets[p + 1] : f.data.length;
      for (let y = 0; y < (end - f.offsets[p]) / f.strides[p]; y++) {
        const row = f.offsets[p] + y * f.strides[p];
        const base = 2 * y + 3 * (f.seq % 256) + 61 * p;
        for (let b = 0; b < f.strides[p]; b++) if (f.data[row + b] !== ((b + base) & 255)) wrong++;
      }
    }
    if (!f.intact()) continue; // overwritten during the copy: not to be trusted
    verified++;
    bad += wrong;
  }
  c.close();
  console.log(JSON.stringify({ zeroCopy: fc.zeroCopy, verified, bad }));
})().catch((e) => { console.error(e); process.exit(1); });
