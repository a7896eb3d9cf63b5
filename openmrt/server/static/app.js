// The openmrt page: connects one player over a WebSocket (/ws), plays its PCM16 frames through
// an AudioWorklet jitter buffer, and sends controls as JSON (protocol: docs/server.md).
'use strict';
const $ = (id) => document.getElementById(id);
// `gaps` counts every break in what is heard: the player here ran dry (stalls) or jumped ahead (skips), or the
// server skipped frames after this page fell behind (skipped_frames). A late frame (late_frames) is a gap only
// when the buffer here could not bridge it, and then it is a stall.
const state = window.openmrt = {connected: false, player: null, samplesReceived: 0, samplesPlayed: 0,
                                 stalls: 0, skips: 0, status: null, errors: [], rttMs: null, fillMs: 0,
                                 gaps() { return this.stalls + this.skips + (this.status ? this.status.skipped_frames : 0); }};
let ws = null, ctx = null, node = null, recording = null;

function log(line) { state.errors.push(line); $('log').textContent = state.errors.slice(-30).join('\n'); }
function send(msg) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(msg)); }

async function start() {
  $('start').disabled = true;
  ctx = new AudioContext({sampleRate: 48000, latencyHint: 'interactive'});
  await ctx.audioWorklet.addModule('/static/player-worklet.js');
  node = new AudioWorkletNode(ctx, 'openmrt-player', {outputChannelCount: [2],
    processorOptions: {target: 3840, maxTarget: 14400, maxLead: 15360}});
  node.port.onmessage = (e) => {
    const s = e.data;
    state.samplesPlayed = s.played; state.stalls = s.stalls; state.skips = s.skips; state.fillMs = s.fill / 48;
    $('v-played').textContent = (s.played / 48000).toFixed(1) + ' s';
  };
  node.connect(ctx.destination);
  await ctx.resume();
  connect();
}

function connect() {
  const token = new URLSearchParams(location.search).get('token');
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws' +
              (token ? '?token=' + encodeURIComponent(token) : '');
  ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => { $('conn').textContent = 'connecting…'; };
  ws.onclose = (e) => { state.connected = false; $('conn').textContent = 'disconnected (' + e.code + ')';
                        $('start').disabled = false; };
  ws.onmessage = (e) => {
    if (typeof e.data !== 'string') {
      state.samplesReceived += e.data.byteLength / 4;
      if (recording) recording.push(new Int16Array(e.data.slice(0)));
      node.port.postMessage(e.data, [e.data]);
      return;
    }
    const m = JSON.parse(e.data);
    if (m.type === 'hello') hello(m);
    else if (m.type === 'status') showStatus(m);
    else if (m.type === 'pong') state.rttMs = performance.now() - m.t;
    else if (m.type === 'error') log(m.code + ': ' + m.message);
  };
}

function hello(m) {
  state.connected = true; state.player = m.player;
  $('conn').textContent = 'player ' + m.player; $('model').textContent = m.model;
  const c = m.controls;
  for (const id of ['cfg_style', 'cfg_notes', 'cfg_drums', 'temperature', 'top_k', 'unmask_width']) {
    $(id).value = c[id]; $(id).nextElementSibling.textContent = c[id];
  }
  $('auto_strum').checked = c.auto_strum; $('midi_gate').checked = c.midi_gate;
  $('solo').checked = c.unmask_width >= 127; $('drums').value = c.drums;
  $('prompt-list').textContent = '';
  (c.prompts.length ? c.prompts : [{text: '', weight: 1}]).forEach((p) => addPrompt(p.text, p.weight));
}

function showStatus(s) {
  state.status = s;
  $('m-buffer').value = s.buffer_ms + state.fillMs;
  $('v-buffer').textContent = `server ${s.buffer_ms.toFixed(0)} + page ${state.fillMs.toFixed(0)} ms`;
  $('v-drops').textContent = `${state.gaps()} gaps (page ${state.stalls} stalls + ${state.skips} skips, server ` +
    `${s.skipped_frames} skipped); ${s.late_frames} frames late`;
  $('v-compute').textContent = `${s.compute_ms.toFixed(1)} ms (p99 ${s.compute_ms_p99.toFixed(1)})`;
  const out = ctx ? (ctx.baseLatency + (ctx.outputLatency || 0)) * 1000 : 0;
  const net = state.rttMs == null ? 0 : state.rttMs / 2;
  const total = s.latency_ms.server_buffer + s.latency_ms.compute + net + state.fillMs + out;
  $('v-latency').textContent = `${total.toFixed(0)} ms = server ${s.latency_ms.server_buffer.toFixed(0)} + compute ` +
    `${s.latency_ms.compute.toFixed(0)} + network ${net.toFixed(0)} + page ${state.fillMs.toFixed(0)} + out ${out.toFixed(0)}`;
  send({type: 'ping', t: performance.now()});
}

// -- controls ------------------------------------------------------------------------------------
const INTS = new Set(['top_k', 'unmask_width']);
for (const id of ['cfg_style', 'cfg_notes', 'cfg_drums', 'temperature', 'top_k', 'unmask_width']) {
  const el = $(id);
  let last = 0;
  const go = (force) => {
    el.nextElementSibling.textContent = el.value;
    const now = performance.now();
    if (!force && now - last < 33) return;  // about 30 messages a second while dragging
    last = now;
    send({type: 'set', name: id, value: INTS.has(id) ? parseInt(el.value, 10) : parseFloat(el.value)});
  };
  el.addEventListener('input', () => go(false));
  el.addEventListener('change', () => go(true));
}
for (const id of ['auto_strum', 'midi_gate', 'solo'])
  $(id).addEventListener('change', () => send({type: 'set', name: id, value: $(id).checked}));
$('drums').addEventListener('change', () => send({type: 'set', name: 'drums', value: $('drums').value}));
$('reset').addEventListener('click', () => send({type: 'reset'}));
$('start').addEventListener('click', start);

function addPrompt(text, weight) {
  const row = document.createElement('div');
  row.className = 'prompt';
  row.innerHTML = '<input type="text" placeholder="e.g. warm jazz piano"><input type="number" min="0" step="0.1"' +
                  ' style="width:4em"><button>x</button>';
  row.children[0].value = text; row.children[1].value = weight;
  row.children[2].onclick = () => row.remove();
  $('prompt-list').appendChild(row);
}
$('prompt-file').onchange = async () => {  // an audio prompt: upload it, then it is a prompt row like any other
  const file = $('prompt-file').files[0];
  if (!file) return;
  const token = new URLSearchParams(location.search).get('token');
  const r = await fetch('/upload' + (token ? '?token=' + encodeURIComponent(token) : ''), {method: 'POST', body: file});
  const j = await r.json();
  if (!r.ok) { log(j.code + ': ' + j.message); return; }
  if ($('prompt-list').children.length < 6) { addPrompt(j.id, 1); $('prompt-list').lastChild.title = file.name; }
  $('prompt-file').value = '';
};
$('prompt-add').onclick = () => { if ($('prompt-list').children.length < 6) addPrompt('', 1); };
$('prompt-send').onclick = () => {
  const prompts = [...$('prompt-list').children]
    .map((r) => ({text: r.children[0].value.trim(), weight: parseFloat(r.children[1].value) || 0}))
    .filter((p) => p.text);
  send({type: 'prompts', prompts});
};

// -- 2-D blend: the prompts sit on a circle; weights fall off with the dot's distance to each -------
const blend = {x: 120, y: 120, last: 0};
function anchors() {
  const rows = [...$('prompt-list').children].filter((r) => r.children[0].value.trim());
  return rows.map((r, i) => {
    const a = -Math.PI / 2 + 2 * Math.PI * i / rows.length;
    return {row: r, x: 120 + 85 * Math.cos(a), y: 120 + 85 * Math.sin(a)};
  });
}
function drawBlend() {
  const c = $('blend').getContext('2d');
  c.clearRect(0, 0, 240, 240);
  c.font = '11px system-ui'; c.textAlign = 'center';
  for (const p of anchors()) {
    c.fillStyle = '#2f6fd0'; c.beginPath(); c.arc(p.x, p.y, 6, 0, 2 * Math.PI); c.fill();
    c.fillStyle = '#ccc';
    c.fillText(p.row.children[0].value.slice(0, 14) + ' ' + (+p.row.children[1].value).toFixed(2), p.x, p.y - 10);
  }
  c.fillStyle = '#e67e22'; c.beginPath(); c.arc(blend.x, blend.y, 7, 0, 2 * Math.PI); c.fill();
}
function moveBlend(e) {
  const r = $('blend').getBoundingClientRect();
  blend.x = Math.max(0, Math.min(240, e.clientX - r.left)); blend.y = Math.max(0, Math.min(240, e.clientY - r.top));
  for (const p of anchors()) {  // 1 on the prompt, 0 from 170 px (the circle's diameter) away
    const d = Math.hypot(p.x - blend.x, p.y - blend.y);
    p.row.children[1].value = Math.max(0, 1 - d / 170).toFixed(2);
  }
  drawBlend();
  const now = performance.now();
  if (e.type === 'pointerup' || now - blend.last > 100) { blend.last = now; $('prompt-send').onclick(); }
}
$('blend').addEventListener('pointerdown', (e) => { $('blend').setPointerCapture(e.pointerId); moveBlend(e); });
$('blend').addEventListener('pointermove', (e) => { if (e.buttons) moveBlend(e); });
$('blend').addEventListener('pointerup', moveBlend);
$('prompt-list').addEventListener('input', drawBlend);
setInterval(drawBlend, 500);

// -- keyboard ------------------------------------------------------------------------------------
let base = 60;
const held = new Set();
function noteOn(p, v = 100) { if (held.has(p)) return; held.add(p); send({type: 'note_on', pitch: p, velocity: v});
                              const k = document.querySelector(`.key[data-pitch="${p}"]`); if (k) k.classList.add('down'); }
function noteOff(p) { if (!held.delete(p)) return; send({type: 'note_off', pitch: p});
                      const k = document.querySelector(`.key[data-pitch="${p}"]`); if (k) k.classList.remove('down'); }
(function drawKeys() {
  const BLACK = new Set([1, 3, 6, 8, 10]);
  let x = 0;
  for (let p = 48; p < 84; p++) {
    const k = document.createElement('div');
    const black = BLACK.has(p % 12);
    k.className = 'key' + (black ? ' black' : '');
    k.dataset.pitch = p;
    k.style.left = (black ? x - 9 : x) + 'px';
    if (!black) x += 28;
    k.addEventListener('pointerdown', (e) => { k.setPointerCapture(e.pointerId); noteOn(p); });
    k.addEventListener('pointerup', () => noteOff(p));
    k.addEventListener('pointercancel', () => noteOff(p));
    $('keys').appendChild(k);
  }
})();
const QWERTY = 'awsedftgyhujk';
document.addEventListener('keydown', (e) => {
  if (e.repeat || e.target.tagName === 'INPUT') return;
  if (e.key === 'z') base = Math.max(24, base - 12);
  else if (e.key === 'x') base = Math.min(96, base + 12);
  const i = QWERTY.indexOf(e.key);
  if (i >= 0) noteOn(base + i);
});
document.addEventListener('keyup', (e) => { const i = QWERTY.indexOf(e.key); if (i >= 0) noteOff(base + i); });

// -- Web MIDI ------------------------------------------------------------------------------------
let midiIn = null;
if (navigator.requestMIDIAccess) {
  navigator.requestMIDIAccess().then((access) => {
    const fill = () => {
      const sel = $('midi-in'), keep = sel.value;
      sel.length = 1;
      for (const input of access.inputs.values()) sel.add(new Option(input.name, input.id));
      sel.value = keep;
    };
    access.onstatechange = fill; fill();
    $('midi-in').onchange = () => {
      if (midiIn) midiIn.onmidimessage = null;
      midiIn = access.inputs.get($('midi-in').value) || null;
      if (midiIn) midiIn.onmidimessage = (e) => {
        const [st, a, b] = e.data, kind = st & 0xf0;
        if (kind === 0x90 && b > 0) send({type: 'note_on', pitch: a, velocity: b});
        else if (kind === 0x80 || kind === 0x90) send({type: 'note_off', pitch: a});
        else if (kind === 0xb0) send({type: 'cc', control: a, value: b});
      };
      $('midi-state').textContent = midiIn ? 'listening to ' + midiIn.name : '';
    };
  }, () => { $('midi-state').textContent = 'Web MIDI not allowed'; });
} else {
  $('midi-state').textContent = 'this browser has no Web MIDI';
}

// -- record --------------------------------------------------------------------------------------
$('rec').onclick = () => {
  if (!recording) { recording = []; $('rec').textContent = 'Stop'; $('rec').classList.add('on'); return; }
  const chunks = recording; recording = null;
  $('rec').textContent = 'Record'; $('rec').classList.remove('on');
  const n = chunks.reduce((a, c) => a + c.length, 0), head = new DataView(new ArrayBuffer(44));
  const str = (o, s) => [...s].forEach((ch, i) => head.setUint8(o + i, ch.charCodeAt(0)));
  str(0, 'RIFF'); head.setUint32(4, 36 + n * 2, true); str(8, 'WAVEfmt ');
  head.setUint32(16, 16, true); head.setUint16(20, 1, true); head.setUint16(22, 2, true);
  head.setUint32(24, 48000, true); head.setUint32(28, 48000 * 4, true); head.setUint16(32, 4, true);
  head.setUint16(34, 16, true); str(36, 'data'); head.setUint32(40, n * 2, true);
  const link = $('rec-link');
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([head, ...chunks], {type: 'audio/wav'}));
  link.download = 'openmrt-' + new Date().toISOString().replace(/[:.]/g, '-') + '.wav';
  link.hidden = false;
};
