// AudioWorklet player: a jitter buffer of interleaved stereo PCM16 frames from the server.
// It starts once `target` samples are queued, fading in. When it runs dry it holds the last
// output value and ramps it to zero (no step, so no click) and waits to refill to `target`,
// then fades in again from the target lead (dropping what a burst brought beyond it): a stall
// re-syncs without a click and without adding latency. Each stall also raises `target` by
// one 40 ms frame, up to `maxTarget` (adaptive, as network jitter buffers are): a machine or
// network that stalls gets the cushion it needs, one that does not keeps the low latency. When
// the queue grows past `target + maxLead` (a burst after a stall) it jumps ahead to `target`,
// crossfading from the old position to the new one, so latency does not creep up.
const FADE = 128;  // samples of every fade (2.7 ms at 48 kHz)

class Player extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    this.cap = o.capacity || 48000 * 4;
    this.target = o.target || 3840;
    this.maxTarget = o.maxTarget || 14400;  // 300 ms
    this.maxLead = o.maxLead || 15360;  // queued beyond the target before a jump: 320 ms
    this.buf = new Float32Array(this.cap * 2);
    this.r = 0; this.w = 0; this.fill = 0;
    this.playing = false; this.fadeIn = 0; this.xr = 0; this.xfade = 0; this.decay = 0;
    this.lastL = 0; this.lastR = 0;
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
    const out = outputs[0], L = out[0], R = out[1] || out[0], n = L.length, b = this.buf;
    if (!this.playing && this.fill >= this.target) {  // (re)start at the target lead: what a burst after a
      const extra = this.fill - this.target;           // stall brought beyond it would only add latency, and
      this.r = (this.r + extra) % this.cap; this.fill -= extra;  // the output is silent here anyway
      this.playing = true; this.fadeIn = FADE;
    }
    if (this.playing && this.fill > this.target + this.maxLead) {  // too far behind: jump to the target lead
      const skip = this.fill - this.target;
      this.xr = this.r; this.xfade = FADE;
      this.r = (this.r + skip) % this.cap; this.fill -= skip; this.skips++;
    }
    for (let i = 0; i < n; i++) {
      if (this.playing && this.fill > 0) {
        let l = b[2 * this.r], r = b[2 * this.r + 1];
        this.r = (this.r + 1) % this.cap; this.fill--; this.played++;
        if (this.xfade > 0) {  // crossfade from where the jump left
          const g = 1 - this.xfade / FADE;
          l = l * g + b[2 * this.xr] * (1 - g); r = r * g + b[2 * this.xr + 1] * (1 - g);
          this.xr = (this.xr + 1) % this.cap; this.xfade--;
        }
        if (this.fadeIn > 0) { const g = 1 - this.fadeIn / FADE; l *= g; r *= g; this.fadeIn--; }
        L[i] = this.lastL = l; R[i] = this.lastR = r; this.decay = FADE;
      } else {
        if (this.playing) {
          this.playing = false; this.stalls++;
          this.target = Math.min(this.maxTarget, this.target + 1920);
        }
        const g = this.decay > 0 ? --this.decay / FADE : 0;  // hold the last value, ramp it to zero
        L[i] = this.lastL * g; R[i] = this.lastR * g;
      }
    }
    this.report();
    return true;
  }
  report() {
    if (currentFrame - this.lastReport < 4800) return;  // ten times a second
    this.lastReport = currentFrame;
    this.port.postMessage({played: this.played, received: this.received, fill: this.fill,
                           stalls: this.stalls, skips: this.skips, target: this.target});
  }
}
registerProcessor('openmrt-player', Player);
