// framecache WHEP player: FcWhep.play(endpoint, video) plays a WHEP stream in a <video>.
// Used by the built-in page; any page may load it (CORS allows it).
(function (global) {
  'use strict';

  function gathered(pc, ms) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise(function (resolve) {
      var done = function () { resolve(); };
      var t = setTimeout(done, ms);
      pc.addEventListener('icegatheringstatechange', function () {
        if (pc.iceGatheringState === 'complete') { clearTimeout(t); done(); }
      });
    });
  }

  // Returns a promise of {pc, resource, stop(), stats()}; rejects with an Error whose
  // .status is the HTTP status when the server refused.
  async function play(endpoint, video, opts) {
    opts = opts || {};
    var pc = new RTCPeerConnection();
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    var ms = new MediaStream();
    pc.ontrack = function (e) {
      ms.addTrack(e.track);
      if (video) video.srcObject = ms;
    };
    await pc.setLocalDescription(await pc.createOffer());
    // Host candidates are ready at once; the server also learns ours from its checks.
    await gathered(pc, 500);
    var headers = { 'Content-Type': 'application/sdp' };
    if (opts.token) headers['Authorization'] = 'Bearer ' + opts.token;
    var t0 = performance.now();
    // 409: the stream is known but not ready (starting); retry as Retry-After says.
    var r;
    for (var tries = opts.retries === undefined ? 10 : opts.retries; ; tries--) {
      r = await fetch(endpoint, { method: 'POST', headers: headers, body: pc.localDescription.sdp });
      if (r.status !== 409 || tries <= 0) break;
      var after = parseFloat(r.headers.get('Retry-After')) || 1;
      await new Promise(function (ok) { setTimeout(ok, after * 1000); });
    }
    if (r.status !== 201) {
      pc.close();
      var err = new Error('WHEP ' + r.status + ': ' + (await r.text()).trim());
      err.status = r.status;
      throw err;
    }
    var loc = r.headers.get('Location');
    // endpoint may be relative (the page's own /whep/...): resolve it against the page first.
    var resource = loc ? new URL(loc, new URL(endpoint, location.href)).href : null;
    await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
    async function stats() {
      var out = { framesDecoded: 0, framesReceived: 0, freezeCount: 0, width: 0, height: 0,
                  audioPackets: 0, audioSamples: 0, state: pc.connectionState };
      (await pc.getStats()).forEach(function (s) {
        if (s.type === 'inbound-rtp' && s.kind === 'video') {
          out.framesDecoded = s.framesDecoded || 0;
          out.framesReceived = s.framesReceived || 0;
          out.freezeCount = s.freezeCount || 0;
          out.width = s.frameWidth || 0;
          out.height = s.frameHeight || 0;
        }
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          out.audioPackets = s.packetsReceived || 0;
          out.audioSamples = s.totalSamplesReceived || 0;
        }
      });
      return out;
    }
    function stop() {
      pc.close();
      if (resource) return fetch(resource, { method: 'DELETE', headers: headers }).catch(function () {});
      return Promise.resolve();
    }
    return { pc: pc, resource: resource, t0: t0, stop: stop, stats: stats };
  }

  global.FcWhep = { play: play };
})(window);
