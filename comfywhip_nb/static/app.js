// comfywhip browser page: publish a camera over WHIP (RFC 9725) and watch the processed
// video over WHEP, side by side, with the server's live stats. Plain ES module, no build step.
// Works from another origin too: the server answers CORS and exposes Location/ETag/Link.
//
// WHIP flow (RFC 9725 §4): POST the offer at once (no candidates: faster than waiting for
// gathering), then send gathered candidates in PATCHes (application/trickle-ice-sdpfrag, with
// If-Match: <ETag>), the last one with a=end-of-candidates; DELETE the resource on stop.
// WHEP uses the same exchange with a recvonly offer on /whep/<publisher session id>.
//
// Audio: the WHEP offer also asks for audio; the processed <video> plays it, with sound by
// default (Start is a click, and Chromium plays WebRTC streams with sound even without one).
// A browser whose autoplay policy still refuses gets the element muted and the button showing
// "Unmute". The button flips <video id="processed">.muted; the choice stays for the next
// Start, and ?muted=1 starts muted.

const $ = (id) => document.getElementById(id);

function graph(node) {
  return {
    1: { class_type: "LoadTensor", inputs: {} },
    2: node,
    3: { class_type: "SaveTensor", inputs: { images: ["2", 0] } },
  };
}

// Used when the server has no GET /presets; ComfyUI API format, ComfyStream conventions.
const EMBEDDED_PRESETS = {
  passthrough: {
    1: { class_type: "LoadTensor", inputs: {} },
    2: { class_type: "SaveTensor", inputs: { images: ["1", 0] } },
  },
  invert: graph({ class_type: "ImageInvert", inputs: { image: ["1", 0] } }),
  blur: graph({ class_type: "ImageBlur", inputs: { image: ["1", 0], blur_radius: 5, sigma: 1.0 } }),
  flip: graph({ class_type: "ImageFlip", inputs: { image: ["1", 0], flip_method: "y-axis: horizontally" } }),
};

// Visible to tests and to the curious (devtools): the page's whole state.
const state = (window.comfywhip = {
  whipState: "idle", whepState: "idle", sessionId: null, whipUrl: null, whepUrl: null,
  stats: null, presets: {}, errors: [], muted: false, audioTracks: 0,
});
let live = null; // {stream, pc, vpc, whip, whep, timer}

function log(message) {
  const line = `${new Date().toLocaleTimeString()}  ${message}`;
  console.log(`comfywhip: ${message}`);
  const el = $("log");
  el.textContent = (line + "\n" + el.textContent).split("\n").slice(0, 200).join("\n");
}

function fail(error) {
  const message = error && error.message ? error.message : String(error);
  state.errors.push(message);
  document.body.dataset.state = "error";
  log(`error: ${message}`);
}

function base() {
  const value = $("server").value.trim() || location.origin;
  return value.replace(/\/+$/, "");
}

function authHeaders(extra = {}) {
  const token = $("token").value.trim();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function problem(resp) {
  const text = await resp.text();
  try {
    const body = JSON.parse(text);
    return `${resp.status} ${body.title || ""}: ${body.detail || text}`;
  } catch {
    return `${resp.status} ${resp.statusText}: ${text.slice(0, 300)}`;
  }
}

// One WHIP or WHEP resource: POST offer, trickle PATCHes, DELETE.
class Resource {
  constructor(endpoint, label, onState) {
    this.endpoint = endpoint;
    this.label = label;
    this.onState = onState;
    this.url = null;
    this.etag = null;
    this.pending = [];
    this.ended = false;
    this.endSent = false;
    this.patching = false;
  }

  async open(pc) {
    this.pc = pc;
    pc.onicecandidate = (event) => this.queue(event.candidate);
    pc.onconnectionstatechange = () => this.onState(pc.connectionState);
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    this.ufrag = offer.sdp.match(/a=ice-ufrag:(.*)\r\n/)[1];
    this.pwd = offer.sdp.match(/a=ice-pwd:(.*)\r\n/)[1];
    this.media = offer.sdp.match(/m=(\w+) /)[1];
    this.mid = pc.getTransceivers()[0].mid ?? "0";
    const resp = await fetch(this.endpoint, {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/sdp" }),
      body: offer.sdp,
    });
    if (resp.status !== 201) throw new Error(`${this.label} POST ${await problem(resp)}`);
    this.url = new URL(resp.headers.get("Location"), resp.url).href;
    this.etag = resp.headers.get("ETag");
    log(`${this.label} 201 ${this.url}`);
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
    this.flush();
  }

  queue(candidate) {
    if (candidate && candidate.candidate) {
      if (candidate.sdpMLineIndex === 0) this.pending.push(candidate.candidate); // max-bundle
    } else {
      this.ended = true;
    }
    this.flush();
  }

  async flush() {
    if (!this.url || this.patching || this.endSent) return;
    if (!this.pending.length && !this.ended) return;
    this.patching = true;
    const candidates = this.pending.splice(0);
    const end = this.ended;
    const body =
      `a=ice-ufrag:${this.ufrag}\r\na=ice-pwd:${this.pwd}\r\n` +
      `m=${this.media} 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:${this.mid}\r\n` +
      candidates.map((c) => `a=${c}\r\n`).join("") +
      (end ? "a=end-of-candidates\r\n" : "");
    try {
      const headers = { "Content-Type": "application/trickle-ice-sdpfrag" };
      if (this.etag) headers["If-Match"] = this.etag;
      const resp = await fetch(this.url, { method: "PATCH", headers: authHeaders(headers), body });
      if (!resp.ok && resp.status !== 405 && resp.status !== 501) {
        log(`${this.label} PATCH ${await problem(resp)}`);
      } else {
        log(`${this.label} PATCH ${resp.status}: ${candidates.length} candidates${end ? ", end" : ""}`);
      }
      if (end) this.endSent = true;
    } catch (error) {
      fail(error);
    } finally {
      this.patching = false;
    }
    if (this.pending.length || (this.ended && !this.endSent)) this.flush();
  }

  async close(keepalive = false) {
    const url = this.url;
    this.url = null;
    if (this.pc) this.pc.close();
    if (!url) return;
    try {
      const resp = await fetch(url, { method: "DELETE", headers: authHeaders(), keepalive });
      log(`${this.label} DELETE ${resp.status}`);
    } catch (error) {
      log(`${this.label} DELETE failed: ${error}`);
    }
  }
}

async function loadPresets() {
  let presets = EMBEDDED_PRESETS;
  try {
    const resp = await fetch(`${base()}/presets`, { headers: authHeaders() });
    if (resp.ok) {
      const data = await resp.json();
      const found = data && typeof data === "object" && (data.presets || data);
      if (found && !Array.isArray(found) && Object.keys(found).length) presets = found;
    }
  } catch {
    // no /presets on this server (or unreachable yet): keep the embedded ones
  }
  state.presets = presets;
  const select = $("preset");
  const wanted = new URLSearchParams(location.search).get("preset") || select.value || "";
  select.replaceChildren(new Option("server default", ""));
  for (const name of Object.keys(presets)) select.append(new Option(name, name));
  select.value = wanted in presets ? wanted : "";
}

async function listDevices() {
  if (!navigator.mediaDevices?.enumerateDevices) return;
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [id, kind, first] of [
    ["camera", "videoinput", ["", "default camera"]],
    ["microphone", "audioinput", ["none", "no audio"]],
  ]) {
    const select = $(id);
    const keep = select.value;
    const options = [new Option(first[1], first[0])];
    if (kind === "audioinput") options.push(new Option("default microphone", ""));
    devices
      .filter((d) => d.kind === kind && d.deviceId)
      .forEach((d, i) => options.push(new Option(d.label || `${kind} ${i + 1}`, d.deviceId)));
    select.replaceChildren(...options);
    if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  }
}

function setState(which, value) {
  state[`${which}State`] = value;
  $(`${which}-state`).textContent = value;
  if (which === "whip") {
    if (value === "connected") document.body.dataset.state = "live";
    if (value === "failed") fail(new Error("WHIP connection failed"));
  }
}

async function start() {
  $("start").disabled = true;
  state.errors = [];
  document.body.dataset.state = "starting";
  try {
    const camera = $("camera").value;
    const mic = $("microphone").value;
    const stream = await navigator.mediaDevices.getUserMedia({
      video: camera ? { deviceId: { exact: camera } } : true,
      audio: mic === "none" ? false : mic ? { deviceId: { exact: mic } } : true,
    });
    live = { stream };
    $("local").srcObject = stream;
    listDevices().catch(() => {});

    const pc = (live.pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" }));
    for (const track of stream.getTracks()) {
      pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    }
    const query = new URLSearchParams();
    const channel = $("channel").value.trim();
    if (channel) query.set("channelId", channel);
    const preset = state.presets[$("preset").value];
    if (preset) query.set("prompts", JSON.stringify(preset));
    const qs = query.toString();
    const endpoint = `${base()}/whip${qs ? "?" + qs : ""}`;
    live.whip = new Resource(endpoint, "WHIP", (s) => setState("whip", s));
    await live.whip.open(pc);
    state.whipUrl = live.whip.url;
    state.sessionId = live.whip.url.split("/").pop();

    // watch this session's own processed video (not whoever is newest on the channel)
    const vpc = (live.vpc = new RTCPeerConnection({ bundlePolicy: "max-bundle" }));
    vpc.addTransceiver("video", { direction: "recvonly" });
    vpc.addTransceiver("audio", { direction: "recvonly" });
    const received = new MediaStream(); // video and audio in one element: they play in sync
    state.audioTracks = 0;
    vpc.ontrack = (event) => {
      received.addTrack(event.track);
      if (event.track.kind === "audio") state.audioTracks += 1;
      const processed = $("processed");
      if (processed.srcObject !== received) processed.srcObject = received;
      playProcessed();
    };
    live.whep = new Resource(`${base()}/whep/${state.sessionId}`, "WHEP", (s) => setState("whep", s));
    await live.whep.open(vpc);
    state.whepUrl = live.whep.url;
    live.timer = setInterval(pollStats, 1000);
    $("stop").disabled = false;
  } catch (error) {
    fail(error);
    await stop();
  }
}

async function stop() {
  const current = live;
  live = null;
  $("stop").disabled = true;
  if (current) {
    clearInterval(current.timer);
    await Promise.all([current.whep?.close(), current.whip?.close()]);
    current.stream?.getTracks().forEach((t) => t.stop());
  }
  $("local").srcObject = null;
  $("processed").srcObject = null;
  setState("whip", "idle");
  setState("whep", "idle");
  if (document.body.dataset.state !== "error") document.body.dataset.state = "idle";
  $("start").disabled = false;
}

// Play the processed stream; with sound unless the user muted it or the browser refuses.
function playProcessed() {
  const processed = $("processed");
  processed.muted = state.muted;
  processed.play().catch((error) => {
    if (error.name !== "NotAllowedError" || processed.muted) return; // e.g. a newer srcObject
    setMuted(true);
    log("the browser refused to play sound without a click: muted (press Unmute)");
    processed.play().catch(() => {});
  });
}

function setMuted(muted) {
  state.muted = muted;
  $("processed").muted = muted;
  const button = $("mute");
  button.setAttribute("aria-pressed", String(muted));
  $("mute-label").textContent = muted ? "Unmute" : "Mute";
}

function toggleMute() {
  setMuted(!state.muted);
  if (!state.muted) $("processed").play().catch(() => {}); // a click: sound is allowed now
}

async function changePreset() {
  if (!live || !state.sessionId) return;
  const name = $("preset").value;
  const url = `${base()}/prompts?sessionId=${encodeURIComponent(state.sessionId)}`;
  try {
    const resp = await fetch(url, {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify(state.presets[name] ?? null),
    });
    log(resp.ok ? `prompt → ${name || "server default"}` : `prompt: ${await problem(resp)}`);
  } catch (error) {
    fail(error);
  }
}

function videoInfo(id) {
  const v = $(id);
  return v.videoWidth ? `${v.videoWidth}×${v.videoHeight} · ${v.currentTime.toFixed(1)} s` : "";
}

async function pollStats() {
  $("local-info").textContent = videoInfo("local");
  $("processed-info").textContent = videoInfo("processed");
  if (!state.sessionId) return;
  try {
    const resp = await fetch(`${base()}/whip-stats`, { headers: authHeaders() });
    if (!resp.ok) return;
    const s = (await resp.json())[state.sessionId];
    if (!s) return;
    state.stats = s;
    $("s-frames").textContent = `${s.frames_in} / ${s.frames_processed} / ${s.frames_dropped}`;
    $("s-fps").textContent = `${s.fps_in.toFixed(1)} / ${s.fps_out.toFixed(1)}`;
    $("s-latency").textContent = `${s.latency_ms.toFixed(1)} ms / ${(s.latency_p95_ms ?? 0).toFixed(1)} ms`;
    $("s-size").textContent = s.width ? `${s.width}×${s.height}` : "–";
    $("s-prompt").textContent = `v${s.prompt_version} (${s.prompt_source ?? "?"})`;
    $("s-error").textContent = s.last_error || s.audio_last_error || "–";
    const audio = s.audio_frames_in > 0;
    $("s-audio").textContent = audio
      ? `${s.audio_frames_in} / ${s.audio_frames_out} · ${s.audio_buffers_dropped}`
      : "no audio";
    $("s-audio-latency").textContent = audio
      ? `${(s.audio_latency_ms ?? 0).toFixed(1)} ms / ${(s.audio_latency_p95_ms ?? 0).toFixed(1)} ms` +
        ` · ${(s.audio_level_out_db ?? -120).toFixed(0)} dBFS`
      : "–";
  } catch {
    // transient: the next poll tries again
  }
}

function init() {
  const params = new URLSearchParams(location.search);
  const configured = document.querySelector('meta[name="comfywhip-server"]')?.content;
  const origin = location.protocol.startsWith("http") ? location.origin : "http://127.0.0.1:8889";
  const fallback = configured || origin; // --public-url, when the server has one
  $("server").value = params.get("server") || fallback;
  $("channel").value = params.get("channel") || "";
  $("controls").addEventListener("submit", (event) => event.preventDefault());
  $("server").addEventListener("change", loadPresets);
  $("token").addEventListener("change", loadPresets); // /presets may need the token
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  $("preset").addEventListener("change", changePreset);
  $("mute").addEventListener("click", toggleMute);
  setMuted(params.get("muted") === "1");
  window.addEventListener("pagehide", () => {
    live?.whep?.close(true);
    live?.whip?.close(true);
  });
  listDevices().catch(() => {});
  loadPresets().then(() => (document.body.dataset.ready = "1"));
}

init();
