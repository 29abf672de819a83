// comfywhip PlayerWidget front end (anywidget ES module, no build step).
//
// Plays a channel's or a session's processed video over WHEP straight from this browser to
// the server (POST /whep/{target} with a recvonly offer, DELETE on close), so the video never
// waits for the kernel. Polls GET /whip-stats once a second for the overlay (server latency)
// and to learn which publisher feeds the target (side-by-side input over /preview/{id}.jpg,
// "ended" when a watched session is gone). In mode "auto" it gives up on WHEP when the
// server cannot be reached or media does not connect within `fallback_after` seconds, and
// tells the kernel (`active` = "jpeg", `status` = why), which then shows its JPEG preview.
// That is the only message it sends to the kernel: front-end messages that arrive while a
// cell awaits can leave the cell "running" for good with ipykernel 7, so playing, frame
// counts and "ended" stay in the page (data-state, data-frames, the status line).

const SIZES = ["320px", "480px", "640px", "800px", "100%"];
const FITS = ["contain", "cover", "fill"];

function h(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "style") node.style.cssText = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function select(options, value, onChange) {
  const node = h("select", { style: "font-size:12px;margin-right:6px" });
  for (const option of options) node.append(new Option(option, option));
  node.value = value;
  node.addEventListener("change", () => onChange(node.value));
  return node;
}

async function waitForIce(pc, ms) {
  if (pc.iceGatheringState === "complete") return;
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

class Player {
  constructor(model, el) {
    this.model = model;
    this.el = el;
    this.createdAt = performance.now();
    this.pc = null;
    this.resource = null;
    this.frames = 0;
    this.times = [];
    this.fallenBack = false;
    this.playing = false;
    this.ended = false;
    this.closed = false;
    this.attempt = 0;
    this.sourceId = null;
    this.stats = null;
    this.jitterMs = null;
    this.build();
    this.onModel = () => this.restart();
    this.onLook = () => this.applyLook();
    for (const name of ["server_url", "target", "token", "mode"]) {
      model.on(`change:${name}`, this.onModel);
    }
    for (const name of ["width", "fit", "show_input"]) model.on(`change:${name}`, this.onLook);
    this.statsTimer = setInterval(() => this.poll(), 1000);
    this.inputTimer = setInterval(() => this.pollInput(this.sourceId), 100);
    this.applyLook();
    this.restart();
  }

  build() {
    const m = this.model;
    this.video = h("video", { class: "comfywhip-player-video", style: "display:block;width:100%;background:#111;aspect-ratio:16/9" });
    this.video.muted = true;
    this.video.autoplay = true;
    this.video.playsInline = true;
    this.still = h("canvas", { class: "comfywhip-player-still", style: "display:none;width:100%;background:#111" });
    this.overlay = h("div", {
      class: "comfywhip-player-overlay",
      style: "position:absolute;left:6px;top:6px;padding:2px 6px;border-radius:4px;" +
        "background:rgba(0,0,0,.6);color:#fff;font:12px monospace;pointer-events:none",
    });
    this.badge = h("div", {
      style: "position:absolute;right:6px;top:6px;padding:2px 8px;border-radius:4px;display:none;" +
        "background:#cf222e;color:#fff;font:bold 12px sans-serif",
    }, ["ended"]);
    this.stage = h("div", { style: "position:relative" }, [this.video, this.still, this.overlay, this.badge]);
    this.input = h("img", { class: "comfywhip-player-input", style: "width:100%;background:#111" });
    this.inputBox = h("div", { style: "flex:1 1 0;display:none" }, [
      h("div", { style: "font:bold 12px sans-serif" }, ["input"]), this.input,
    ]);
    const processed = h("div", { style: "flex:1 1 0" }, [
      h("div", { style: "font:bold 12px sans-serif" }, ["processed (WHEP)"]), this.stage,
    ]);
    this.line = h("div", { class: "comfywhip-player-status", style: "font:12px sans-serif;color:#656d76;margin-top:2px" });
    const size = select(SIZES, m.get("width"), (v) => { m.set("width", v); m.save_changes(); });
    const fit = select(FITS, m.get("fit"), (v) => { m.set("fit", v); m.save_changes(); });
    const controls = h("div", { style: "font:12px sans-serif;margin-bottom:4px" }, ["size ", size, "fit ", fit]);
    this.root = h("div", { class: "comfywhip-player" }, [
      controls, h("div", { style: "display:flex;gap:8px;align-items:flex-start" }, [processed, this.inputBox]), this.line,
    ]);
    this.el.append(this.root);
  }

  applyLook() {
    const m = this.model;
    const twoUp = m.get("show_input");
    const width = m.get("width") || "640px";
    this.root.style.width = twoUp && width !== "100%" ? `calc(2 * ${width} + 8px)` : width;
    this.root.style.maxWidth = "100%";
    this.video.style.objectFit = m.get("fit") || "contain";
    this.inputBox.style.display = twoUp ? "block" : "none";
  }

  base() {
    return (this.model.get("server_url") || "").replace(/\/+$/, "");
  }

  headers(extra = {}) {
    const token = this.model.get("token");
    return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
  }

  say(state, text) {
    this.el.dataset.state = state;
    this.line.textContent = text;
  }

  report(active, status) {
    this.model.set("active", active);
    this.model.set("status", status);
    this.model.save_changes();
  }

  async restart() {
    this.teardown();
    this.fallenBack = false;
    this.playing = false;
    this.ended = false;
    this.frozen = false;
    this.attempt = 0;
    this.badge.style.display = "none";
    this.still.style.display = "none";
    this.video.style.display = "block";
    this.root.append(this.line);
    const mode = this.model.get("mode");
    if (mode === "jpeg") {
      this.root.style.display = "none";
      this.say("jpeg", "JPEG preview chosen (mode='jpeg')");
      return;
    }
    this.root.style.display = "block";
    this.connect();
  }

  teardown() {
    clearTimeout(this.retryTimer);
    clearTimeout(this.fallbackTimer);
    const pc = this.pc;
    const resource = this.resource;
    this.pc = null;
    this.resource = null;
    if (pc) pc.close();
    if (resource) {
      fetch(resource, { method: "DELETE", headers: this.headers(), keepalive: true }).catch(() => {});
    }
  }

  fallback(why) {
    if (this.model.get("mode") !== "auto" || this.fallenBack || this.closed) return false;
    this.fallenBack = true;
    this.el.dataset.fallbackMs = String(Math.round(performance.now() - this.createdAt));
    this.teardown();
    this.root.style.display = "none";
    const text = `${why}: showing the kernel's JPEG preview instead`;
    this.say("fallback", text);
    this.el.append(this.line); // keep the one line visible outside the hidden player
    this.report("jpeg", text);
    return true;
  }

  async connect() {
    if (this.closed) return;
    const attempt = ++this.attempt;
    const base = this.base();
    const target = this.model.get("target");
    const endpoint = `${base}/whep${target ? "/" + encodeURIComponent(target) : ""}`;
    const limit = Math.max(1, this.model.get("fallback_after") || 5) * 1000;
    this.say("connecting", `connecting to ${endpoint} …`);
    const pc = (this.pc = new RTCPeerConnection({ bundlePolicy: "max-bundle" }));
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (event) => {
      this.video.srcObject = event.streams[0] || new MediaStream([event.track]);
      this.video.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => this.onState(pc, attempt);
    this.fallbackTimer = setTimeout(() => {
      if (this.pc === pc && pc.connectionState !== "connected") {
        this.fallback(`WebRTC media did not connect within ${limit / 1000} s (is UDP to ${base} blocked?)`);
      }
    }, limit);
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIce(pc, 1500);
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort(), limit);
      let resp;
      try {
        resp = await fetch(endpoint, {
          method: "POST",
          headers: this.headers({ "Content-Type": "application/sdp" }),
          body: pc.localDescription.sdp,
          signal: abort.signal,
        });
      } finally {
        clearTimeout(timer);
      }
      if (this.pc !== pc) return;
      if (resp.status !== 201) {
        const detail = (await resp.text()).slice(0, 200);
        throw Object.assign(new Error(`WHEP POST answered ${resp.status}: ${detail}`), { http: resp.status });
      }
      this.resource = new URL(resp.headers.get("Location"), resp.url).href;
      await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
      this.say("connecting", "WHEP answered; connecting media …");
    } catch (error) {
      if (this.pc !== pc) return;
      const message = error && error.message ? error.message : String(error);
      const why = error.http ? message : `this browser cannot reach ${base} (${message})`;
      if (!this.fallback(why)) this.retry(why);
    }
  }

  retry(why) {
    if (this.closed || this.ended) return;
    const delay = Math.min(1000 * 2 ** Math.min(this.retries = (this.retries || 0) + 1, 3), 8000);
    if (!this.frozen) this.say("retrying", `${why}; retrying in ${delay / 1000} s`);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.teardown();
      this.connect();
    }, delay);
  }

  onState(pc, attempt) {
    if (this.pc !== pc || attempt !== this.attempt) return;
    const state = pc.connectionState;
    if (state === "connected") {
      clearTimeout(this.fallbackTimer);
      this.retries = 0;
      this.playing = true;
      this.say("playing", "playing over WHEP");
      this.watchFrames();
    } else if (state === "failed" || state === "closed" || state === "disconnected") {
      if (this.targetGone()) this.end();
      else if (state !== "disconnected") this.retry(`WHEP connection ${state}`);
    }
  }

  targetGone() {
    const target = this.model.get("target");
    return Boolean(target && this.stats && !(target in this.stats) && this.sourceId === null && this.wasSession);
  }

  freeze(text) {
    // keep the last frame on screen (a canvas copy: a stopped stream may blank the video)
    if (this.frozen) return;
    this.frozen = true;
    const v = this.video;
    if (v.videoWidth) {
      this.still.width = v.videoWidth;
      this.still.height = v.videoHeight;
      this.still.getContext("2d").drawImage(v, 0, 0);
      this.still.style.display = "block";
      this.video.style.display = "none";
    }
    this.badge.style.display = "block";
    this.say("ended", text);
  }

  end() {
    if (this.ended) return;
    this.ended = true;
    this.freeze("ended: the session stopped; this is its last frame");
    this.teardown();
  }

  watchFrames() {
    const v = this.video;
    if (this.watching || !v.requestVideoFrameCallback) return;
    this.watching = true;
    const step = (_now, meta) => {
      this.frames += 1;
      const t = performance.now();
      this.times.push(t);
      while (this.times.length && this.times[0] < t - 1000) this.times.shift();
      this.el.dataset.frames = String(this.frames);
      this.drawOverlay(meta);
      if (!this.closed) v.requestVideoFrameCallback(step);
    };
    v.requestVideoFrameCallback(step);
  }

  drawOverlay(meta) {
    if (this.frames % 5 !== 1) return; // a few updates per second are plenty
    const fps = this.times.length;
    const parts = [`#${this.frames}`, `${fps} fps`];
    if (meta && meta.width) parts.push(`${meta.width}x${meta.height}`);
    const server = this.stats && this.sourceId && this.stats[this.sourceId];
    if (server && this.jitterMs !== null) {
      const total = server.latency_ms + this.jitterMs;
      parts.push(`≈${total.toFixed(0)} ms (server ${server.latency_ms.toFixed(0)} + jitter buffer ${this.jitterMs.toFixed(0)})`);
    }
    this.overlay.textContent = parts.join(" · ");
    this.el.dataset.fps = String(fps);
  }

  async poll() {
    if (this.closed || this.fallenBack || this.model.get("mode") === "jpeg") return;
    try {
      const resp = await fetch(`${this.base()}/whip-stats`, { headers: this.headers() });
      if (!resp.ok) return;
      this.stats = await resp.json();
    } catch {
      if (this.playing) this.freeze("ended: the server is gone (stopped?); this is the last frame");
      return; // never played: the WHEP path reports it
    }
    const target = this.model.get("target");
    const publishers = Object.entries(this.stats).filter(([, s]) => s.kind !== "whep");
    let source = null;
    if (target && target in this.stats) {
      source = target;
      this.wasSession = true;
    } else {
      const channel = target || "default";
      const live = publishers.filter(([, s]) => s.channel_id === channel);
      live.sort((a, b) => a[1].created_at - b[1].created_at);
      source = live.length ? live[live.length - 1][0] : null;
    }
    const previous = this.sourceId;
    this.sourceId = source;
    if (this.wasSession && source === null) this.end();
    else if (!this.wasSession && source && previous !== source && (previous || this.frozen)) {
      this.restart(); // a new publisher on the channel: start from its first frame
    } else if (!this.wasSession && !source && this.playing) {
      this.freeze(`ended: no publisher on channel ${target || "default"}; this is the last frame`);
    }
    if (this.pc) {
      try {
        const report = await this.pc.getStats();
        report.forEach((s) => {
          if (s.type === "inbound-rtp" && s.kind === "video" && s.jitterBufferEmittedCount) {
            this.jitterMs = (1000 * s.jitterBufferDelay) / s.jitterBufferEmittedCount;
          }
        });
      } catch {
        // stats are best effort
      }
    }
  }

  async pollInput(source) {
    if (!this.model.get("show_input") || !source || this.inputBusy || this.fallenBack) return;
    this.inputBusy = true;
    try {
      const url = `${this.base()}/preview/${encodeURIComponent(source)}.jpg?kind=input&width=480`;
      const resp = await fetch(url, { headers: this.headers() });
      if (resp.ok) {
        const old = this.input.src;
        this.input.src = URL.createObjectURL(await resp.blob());
        if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      }
    } catch {
      // the next poll tries again
    } finally {
      this.inputBusy = false;
    }
  }

  close() {
    this.closed = true;
    clearInterval(this.statsTimer);
    clearInterval(this.inputTimer);
    for (const name of ["server_url", "target", "token", "mode"]) this.model.off(`change:${name}`, this.onModel);
    for (const name of ["width", "fit", "show_input"]) this.model.off(`change:${name}`, this.onLook);
    this.teardown();
  }
}

export default {
  render({ model, el }) {
    const player = new Player(model, el);
    return () => player.close();
  },
};
