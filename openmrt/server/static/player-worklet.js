// AudioWorklet player: a jitter buffer of interleaved stereo PCM16 frames from the server.
// It starts once `target` samples are queued; when it runs dry it fades the last samples out
// and waits to refill to `target`, then fades in (a stall re-syncs without a click). When the
// queue grows past `maxLead` (a burst after a network stall) it skips ahead to `target`, with
// a fade out and in, so latency does not creep up.
const FADE = 128;  // samples of fade (2.7 ms at 48 kHz)

class Player extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    this.cap = o.capacity || 48000 * 4;
    this.target = o.target || 3840;
    this.maxLead = o.maxLead || 19200;
    this.buf = new Float32Array(this.cap * 2);
    this.r = 0; this.w = 0; this.fill = 0;
    this.playing = false; this.fadeIn = 0;
    this.played = 0; this.received = 0; this.stalls = 0; this.skips = 0; this.lastReport = 0;
    this.port.onmessage = (e) => this.push(new Int16Array(e.data));
  }
  push(pcm) {
    const n = pcm.length >> 1;
    for (let i = 0; i < n; i++) {
      if (this.fill >= this.cap) { this.r = (this.r + 1) % this.cap; this.fill--; }  // overflow: drop oldest
      this.buf[2 * this.w] = pcm[2 * i] / 32768; this.buf[2 * this.w + 1] = pcm[2 * i + 1] / 32768;
      this.w = (this.w + 1) % this.cap; this.fill++;
    }
    this.received += n;
  }
  process(inputs, outputs) {
    const out = outputs[0], L = out[0], R = out[1] || out[0], n = L.length;
    if (!this.playing && this.fill >= this.target) { this.playing = true; this.fadeIn = FADE; }
    if (this.playing && this.fill > this.maxLead) {  // too far behind: jump to the target lead
      const skip = this.fill - this.target;
      this.r = (this.r + skip) % this.cap; this.fill -= skip; this.skips++; this.fadeIn = FADE;
    }
    if (!this.playing) { L.fill(0); R.fill(0); this.report(); return true; }
    const m = Math.min(n, this.fill), dry = m < n;
    for (let i = 0; i < m; i++) {
      let g = 1;
      if (this.fadeIn > 0) { g = 1 - this.fadeIn / FADE; this.fadeIn--; }
      if (dry) g *= (m - i) / m;  // running dry: fade out what is left
      L[i] = this.buf[2 * this.r] * g; R[i] = this.buf[2 * this.r + 1] * g;
      this.r = (this.r + 1) % this.cap;
    }
    for (let i = m; i < n; i++) { L[i] = 0; R[i] = 0; }
    this.fill -= m; this.played += m;
    if (dry) { this.playing = false; this.stalls++; }
    this.report();
    return true;
  }
  report() {
    if (currentFrame - this.lastReport < 4800) return;  // ten times a second
    this.lastReport = currentFrame;
    this.port.postMessage({played: this.played, received: this.received, fill: this.fill,
                           stalls: this.stalls, skips: this.skips});
  }
}
registerProcessor('openmrt-player', Player);
