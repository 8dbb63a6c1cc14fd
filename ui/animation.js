// The reverse animation on a 2-D canvas: Streamlit components v2 module (see ui/animation.py).
//
// The payload (charts/animation.py) comes once; play, pause, scrub, speed, trails and the x̂_0 toggle
// all run here, with no server round trip. Streamlit calls the default export again, on the same
// parentElement, whenever the element's data changes (a keyed element keeps its identity): the
// state below lives in a WeakMap keyed by that element, and playback restarts only when the
// frames' digest changes.
//
// Test hooks on the root (.ddpm-anim): data-frame, data-frames, data-playing, data-painted (frames
// painted by playback: +1 in each requestAnimationFrame callback that drew a new frame),
// data-draws (every paint, scrubbing included), data-calls (calls of the default export), data-trails, data-show-x0, data-frame-ms,
// data-digest; root.paintLog: [frame, time in ms] of each playback paint since the last Play;
// root.drawMs: milliseconds spent drawing, all draws together.

const STATES = new WeakMap();
const SPEEDS_MS = [16, 25, 33, 40, 60, 100, 200];
const MAX_TRAILS = 32;
const ASPECT = 0.62; // height / width when no height is given
const MIN_HEIGHT = 240;
const MAX_HEIGHT = 620;
const MARGIN = { left: 38, right: 8, top: 6, bottom: 20 }; // CSS px around the plot, for tick labels
const REPORT_DELAY_MS = 400; // changes closer together than this are reported once (one rerun)
const LOG_LIMIT = 20000;

const TEMPLATE = `
<div class="ddpm-anim" data-frame="0" data-frames="0" data-playing="false" data-painted="0" data-draws="0">
  <div class="head">
    <div class="title"></div>
    <div class="legend" role="group" aria-label="Legend">
      <span class="item" data-layer="sample"><i class="swatch"></i><span>x<sub>t</sub></span></span>
      <button type="button" class="item" data-layer="data" aria-pressed="true" title="Show or hide the data"><i class="swatch"></i><span>data</span></button>
      <button type="button" class="item" data-layer="x0" aria-pressed="false" title="Show or hide the predicted x₀"><i class="swatch"></i><span>predicted x₀</span></button>
      <button type="button" class="item" data-layer="baseline" aria-pressed="true" title="Show or hide the baseline"><i class="swatch"></i><span>baseline</span></button>
    </div>
  </div>
  <div class="stage"><canvas role="img" aria-label="Animation of the points"></canvas></div>
  <div class="bar">
    <button type="button" class="play">▶ Play</button>
    <input class="scrub" type="range" min="0" max="0" step="1" value="0" aria-label="Frame">
    <output class="frame-label" aria-live="off"></output>
  </div>
  <div class="options">
    <label class="option">Speed
      <select class="speed" aria-label="Speed"></select>
    </label>
    <label class="option">Trails
      <input class="trails" type="range" min="0" max="${MAX_TRAILS}" step="1" value="0" aria-label="Trails">
      <output class="trails-value">0</output>
    </label>
    <label class="option toggle">
      <input class="x0" type="checkbox" role="switch" aria-label="predicted x₀"><span class="track"></span><span>predicted x₀</span>
    </label>
  </div>
</div>`;

function decode(encoded) {
  // base64 of little-endian float32 (every browser's Float32Array is little-endian in practice)
  if (!encoded) return null;
  const binary = atob(encoded.b64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

function niceStep(span, count) {
  const raw = span / Math.max(count, 1);
  const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
  const r = raw / magnitude;
  return magnitude * (r < 1.5 ? 1 : r < 3.5 ? 2 : r < 7.5 ? 5 : 10);
}

function speedLabel(ms) {
  const fps = 1000 / ms;
  return `${ms} ms · ${fps >= 10 ? Math.round(fps) : fps.toFixed(1)} fps`;
}

function trailIds(count, points) {
  // numpy's linspace(0, points - 1, count).astype(int)
  if (count <= 0) return [];
  if (count === 1) return [0];
  return Array.from({ length: count }, (_, i) => Math.floor((i * (points - 1)) / (count - 1)));
}

function build(parentElement) {
  const holder = document.createElement("div");
  holder.innerHTML = TEMPLATE;
  const root = holder.firstElementChild;
  parentElement.appendChild(root);
  const q = (selector) => root.querySelector(selector);
  const s = {
    root,
    canvas: q("canvas"),
    stage: q(".stage"),
    title: q(".title"),
    legend: q(".legend"),
    play: q(".play"),
    scrub: q(".scrub"),
    frameLabel: q(".frame-label"),
    speed: q(".speed"),
    trailsInput: q(".trails"),
    trailsValue: q(".trails-value"),
    x0Input: q(".x0"),
    payload: null,
    display: null, // the payload's display choices last applied
    digest: null,
    frames: null,
    x0: null,
    baseline: null,
    data: null,
    numFrames: 0,
    numPoints: 0,
    baselinePoints: 0,
    frame: 0,
    playing: false,
    frameMs: 40,
    trails: 0,
    showX0: false,
    hidden: new Set(),
    heightOption: null,
    report: true,
    setStateValue: null,
    reported: null,
    reportTimer: null,
    due: 0,
    raf: 0,
    drawRaf: 0,
    painted: 0,
    draws: 0,
    calls: 0,
    size: { width: 0, height: 0, dpr: 1 },
    background: null,
    sprites: new Map(),
    view: null,
    observer: null,
    attached: false,
  };
  root.paintLog = [];
  root.drawMs = 0; // time spent in draw(), all draws together

  s.play.addEventListener("click", () => (s.playing ? pause(s) : play(s)));
  s.scrub.addEventListener("input", () => {
    if (s.playing) pause(s);
    setFrame(s, Number(s.scrub.value));
  });
  s.speed.addEventListener("change", () => {
    s.frameMs = Number(s.speed.value);
    s.due = performance.now() + s.frameMs;
    sync(s);
    report(s);
  });
  s.trailsInput.addEventListener("input", () => {
    s.trails = Number(s.trailsInput.value);
    sync(s);
    requestDraw(s);
  });
  s.trailsInput.addEventListener("change", () => report(s)); // on release: one report per drag
  s.x0Input.addEventListener("change", () => {
    s.showX0 = s.x0Input.checked;
    sync(s);
    requestDraw(s);
    report(s);
  });
  s.legend.addEventListener("click", (event) => {
    const item = event.target.closest("button.item");
    if (!item || item.disabled) return;
    const layer = item.dataset.layer;
    if (layer === "x0") {
      s.showX0 = !s.showX0;
    } else if (s.hidden.has(layer)) {
      s.hidden.delete(layer);
    } else {
      s.hidden.add(layer);
    }
    if (layer === "data") s.background = null;
    sync(s);
    requestDraw(s);
    report(s);
  });
  return s;
}

function attach(s) {
  if (s.attached) return;
  s.attached = true;
  s.observer = new ResizeObserver(() => resize(s));
  s.observer.observe(s.stage);
  if (s.playing) s.raf = requestAnimationFrame((now) => tick(s, now));
}

function detach(s) {
  // Streamlit's cleanup: stop the loop and the observer; a later call on this element resumes
  s.attached = false;
  if (s.observer) s.observer.disconnect();
  cancelAnimationFrame(s.raf);
  cancelAnimationFrame(s.drawRaf);
  s.raf = s.drawRaf = 0;
}

function setData(s, payload) {
  s.payload = payload;
  s.digest = payload.digest;
  s.frames = decode(payload.frames);
  s.x0 = decode(payload.predicted_x0);
  s.baseline = decode(payload.baseline);
  s.data = decode(payload.data);
  s.numFrames = payload.num_frames;
  s.numPoints = payload.num_points;
  s.baselinePoints = payload.baseline ? payload.baseline.shape[1] : 0;
  s.background = null;
  s.sprites.clear();
  s.scrub.max = String(Math.max(s.numFrames - 1, 0));
  s.title.textContent = payload.title || "";
  const legend = (layer) => s.legend.querySelector(`[data-layer="${layer}"]`);
  legend("x0").hidden = !s.x0;
  legend("baseline").hidden = !s.baseline;
  s.x0Input.disabled = !s.x0;
  s.x0Input.closest(".toggle").classList.toggle("disabled", !s.x0);
  const colors = payload.colors;
  for (const [layer, color] of Object.entries({ sample: colors.sample, data: colors.data, x0: colors.x0, baseline: colors.baseline })) {
    legend(layer).querySelector(".swatch").style.background = color;
  }
  s.classes = payload.classes || null; // a conditional model's samples: each point in its class's colour
  if (s.classes) legend("sample").querySelector(".swatch").style.background =
    `linear-gradient(90deg, ${payload.class_colors.join(", ")})`;
}

function applyDisplay(s, display, previous) {
  // the payload's display choices, field by field, where they changed since the last payload
  // (the server changed its mind); otherwise what the user chose here stays
  const changed = (name) => !previous || previous[name] !== display[name];
  if (changed("frame_ms")) s.frameMs = Math.max(1, Math.round(display.frame_ms));
  if (changed("trails")) s.trails = Math.min(MAX_TRAILS, Math.max(0, Math.round(display.trails)));
  if (changed("show_x0")) s.showX0 = !!display.show_x0;
  if (changed("hidden") && Array.isArray(display.hidden)) s.hidden = new Set(display.hidden);
  s.display = { ...display };
}

function fillSpeeds(s) {
  const choices = [...new Set([...SPEEDS_MS, s.frameMs])].sort((a, b) => a - b);
  s.speed.replaceChildren(
    ...choices.map((ms) => {
      const option = document.createElement("option");
      option.value = String(ms);
      option.textContent = speedLabel(ms);
      return option;
    }),
  );
}

function sync(s) {
  // controls and test hooks from the state
  const r = s.root;
  r.dataset.frame = String(s.frame);
  r.dataset.frames = String(s.numFrames);
  r.dataset.playing = String(s.playing);
  r.dataset.trails = String(s.trails);
  r.dataset.showX0 = String(s.showX0 && !!s.x0);
  r.dataset.frameMs = String(s.frameMs);
  r.dataset.digest = s.digest || "";
  s.play.textContent = s.playing ? "❚❚ Pause" : "▶ Play";
  s.play.setAttribute("aria-label", s.playing ? "Pause" : "Play");
  s.scrub.value = String(s.frame);
  s.frameLabel.value = s.payload ? s.payload.labels[s.frame] || "" : "";
  if (![...s.speed.options].some((o) => Number(o.value) === s.frameMs)) fillSpeeds(s);
  s.speed.value = String(s.frameMs);
  s.trailsInput.value = String(s.trails);
  s.trailsValue.value = String(s.trails);
  s.x0Input.checked = s.showX0 && !!s.x0;
  for (const item of s.legend.querySelectorAll("button.item")) {
    const layer = item.dataset.layer;
    const on = layer === "x0" ? s.showX0 && !!s.x0 : !s.hidden.has(layer);
    item.setAttribute("aria-pressed", String(on));
  }
}

function currentDisplay(s) {
  return { trails: s.trails, show_x0: s.showX0, frame_ms: s.frameMs, hidden: [...s.hidden].sort() };
}

function report(s) {
  // setStateValue reruns the script (a fragment: the fragment): only chosen display settings,
  // debounced, never playback or the frame
  if (!s.report || !s.setStateValue) return;
  clearTimeout(s.reportTimer);
  s.reportTimer = setTimeout(() => {
    const value = currentDisplay(s);
    const text = JSON.stringify(value);
    if (text === s.reported) return;
    s.reported = text;
    s.setStateValue("display", value);
  }, REPORT_DELAY_MS);
}

// --- playback ------------------------------------------------------------------------------------

function play(s) {
  if (s.numFrames < 2) return;
  if (s.frame >= s.numFrames - 1) s.frame = 0;
  s.playing = true;
  s.root.paintLog = [[s.frame, performance.now()]];
  draw(s);
  s.due = performance.now() + s.frameMs;
  sync(s);
  cancelAnimationFrame(s.raf);
  if (s.attached) s.raf = requestAnimationFrame((now) => tick(s, now));
}

function pause(s) {
  s.playing = false;
  cancelAnimationFrame(s.raf);
  s.raf = 0;
  sync(s);
}

function tick(s, now) {
  // One frame at most per animation frame, so none is skipped: a slow machine plays slower.
  if (!s.playing) return;
  if (now >= s.due - 4) {
    s.frame += 1;
    draw(s);
    s.painted += 1;
    s.root.dataset.painted = String(s.painted);
    const log = s.root.paintLog;
    if (log.length < LOG_LIMIT) log.push([s.frame, now]);
    s.due += s.frameMs;
    if (now - s.due > s.frameMs) s.due = now + s.frameMs; // fell behind: don't rush to catch up
    if (s.frame >= s.numFrames - 1) {
      s.playing = false;
      s.raf = 0;
      sync(s);
      return;
    }
    sync(s);
  }
  s.raf = requestAnimationFrame((t) => tick(s, t));
}

function setFrame(s, frame) {
  s.frame = Math.min(Math.max(0, Math.round(frame)), Math.max(s.numFrames - 1, 0));
  sync(s);
  requestDraw(s);
}

function requestDraw(s) {
  if (s.drawRaf || !s.attached) return;
  s.drawRaf = requestAnimationFrame(() => {
    s.drawRaf = 0;
    draw(s);
  });
}

// --- drawing -------------------------------------------------------------------------------------

function resize(s) {
  const width = Math.floor(s.stage.clientWidth);
  if (width <= 0) return;
  const height = s.heightOption ? s.heightOption : Math.round(Math.min(MAX_HEIGHT, Math.max(MIN_HEIGHT, width * ASPECT)));
  const dpr = window.devicePixelRatio || 1;
  const size = s.size;
  if (size.width === width && size.height === height && size.dpr === dpr) return;
  s.size = { width, height, dpr };
  s.canvas.style.width = `${width}px`;
  s.canvas.style.height = `${height}px`;
  s.canvas.width = Math.round(width * dpr);
  s.canvas.height = Math.round(height * dpr);
  s.background = null;
  s.sprites.clear();
  draw(s);
}

function computeView(s) {
  // equal scale in x and y: the payload's ranges, the longer side of the canvas widened
  const { width, height, dpr } = s.size;
  const [x0, x1] = s.payload.x_range;
  const [y0, y1] = s.payload.y_range;
  const plotW = width - MARGIN.left - MARGIN.right;
  const plotH = height - MARGIN.top - MARGIN.bottom;
  const scale = Math.min(plotW / (x1 - x0), plotH / (y1 - y0));
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  const vx0 = cx - plotW / (2 * scale);
  const vy1 = cy + plotH / (2 * scale);
  return {
    plotW, plotH, scale, vx0, vx1: cx + plotW / (2 * scale), vy0: cy - plotH / (2 * scale), vy1,
    // device pixels: X = x * ax + bx, Y = y * ay + by
    ax: scale * dpr, bx: (MARGIN.left - vx0 * scale) * dpr, ay: -scale * dpr, by: (MARGIN.top + vy1 * scale) * dpr,
  };
}

function sprite(s, color, alpha, radius) {
  const key = `${color}/${alpha}/${radius}`;
  let made = s.sprites.get(key);
  if (!made) {
    const dpr = s.size.dpr;
    const side = Math.ceil((2 * radius + 2) * dpr);
    const canvas = document.createElement("canvas");
    canvas.width = canvas.height = side;
    const ctx = canvas.getContext("2d");
    ctx.globalAlpha = alpha;
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.arc(side / 2, side / 2, radius * dpr, 0, 2 * Math.PI);
    ctx.fill();
    made = { canvas, half: side / 2 };
    s.sprites.set(key, made);
  }
  return made;
}

function drawPoints(s, ctx, array, offset, count, look) {
  // count points from array[offset], as sprites: overlapping points add up, as in the SVG chart
  const v = s.view;
  const { canvas, half } = sprite(s, look.color, look.alpha, look.radius);
  for (let i = 0, j = offset; i < count; i++, j += 2) {
    const x = array[j];
    const y = array[j + 1];
    if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
    ctx.drawImage(canvas, x * v.ax + v.bx - half, y * v.ay + v.by - half);
  }
}

function drawClassPoints(s, ctx, array, offset, count, palette, alpha, radius) {
  // like drawPoints, each point in the colour of its class (s.classes[i])
  const v = s.view;
  const looks = palette.map((color) => sprite(s, color, alpha, radius));
  for (let i = 0, j = offset; i < count; i++, j += 2) {
    const x = array[j];
    const y = array[j + 1];
    if (!Number.isFinite(x) || !Number.isFinite(y)) continue;
    const { canvas, half } = looks[s.classes[i]];
    ctx.drawImage(canvas, x * v.ax + v.bx - half, y * v.ay + v.by - half);
  }
}

function paintBackground(s) {
  const { width, height, dpr } = s.size;
  const bg = document.createElement("canvas");
  bg.width = s.canvas.width;
  bg.height = s.canvas.height;
  const ctx = bg.getContext("2d");
  const style = getComputedStyle(s.root);
  const text = style.getPropertyValue("--anim-tick").trim() || "#808495";
  ctx.fillStyle = style.getPropertyValue("--anim-bg").trim() || "#ffffff";
  ctx.fillRect(0, 0, bg.width, bg.height);
  ctx.scale(dpr, dpr);
  const v = s.view;
  const left = MARGIN.left;
  const top = MARGIN.top;
  const right = width - MARGIN.right;
  const bottom = height - MARGIN.bottom;
  const step = niceStep(Math.max(v.vx1 - v.vx0, v.vy1 - v.vy0), Math.max(v.plotW, v.plotH) / 90);
  const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  ctx.font = `11px ${style.fontFamily}`;
  ctx.fillStyle = text;
  ctx.strokeStyle = style.getPropertyValue("--anim-grid").trim() || "#e6e9ef";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (let x = Math.ceil(v.vx0 / step) * step; x <= v.vx1 + 1e-9; x += step) {
    const px = Math.round(left + (x - v.vx0) * v.scale) + 0.5;
    ctx.moveTo(px, top);
    ctx.lineTo(px, bottom);
    if (px > left + 8 && px < right - 8) ctx.fillText((Math.abs(x) < step / 2 ? 0 : x).toFixed(digits), px, bottom + 4);
  }
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let y = Math.ceil(v.vy0 / step) * step; y <= v.vy1 + 1e-9; y += step) {
    const py = Math.round(top + (v.vy1 - y) * v.scale) + 0.5;
    ctx.moveTo(left, py);
    ctx.lineTo(right, py);
    if (py > top + 6 && py < bottom - 6) ctx.fillText((Math.abs(y) < step / 2 ? 0 : y).toFixed(digits), left - 6, py);
  }
  ctx.stroke();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  if (!s.hidden.has("data")) {
    ctx.save();
    clipToPlot(s, ctx);
    drawPoints(s, ctx, s.data, 0, s.data.length / 2, { color: s.payload.colors.data, alpha: 0.18, radius: 1.5 });
    ctx.restore();
  }
  return bg;
}

function clipToPlot(s, ctx) {
  const { width, height, dpr } = s.size;
  ctx.beginPath();
  ctx.rect(MARGIN.left * dpr, MARGIN.top * dpr, (width - MARGIN.left - MARGIN.right) * dpr, (height - MARGIN.top - MARGIN.bottom) * dpr);
  ctx.clip();
}

function draw(s) {
  if (!s.payload || !s.size.width || !s.attached) return;
  const started = performance.now();
  const ctx = s.canvas.getContext("2d");
  if (!s.background) {
    s.view = computeView(s);
    s.background = paintBackground(s);
  }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.drawImage(s.background, 0, 0);
  ctx.save();
  clipToPlot(s, ctx);
  const k = s.frame;
  const n = s.numPoints;
  const colors = s.payload.colors;
  const radius = s.payload.marker_size / 2;
  if (s.classes) drawClassPoints(s, ctx, s.frames, k * n * 2, n, s.payload.class_colors, 0.75, radius);
  else drawPoints(s, ctx, s.frames, k * n * 2, n, { color: colors.sample, alpha: 0.75, radius });
  if (s.baseline && !s.hidden.has("baseline")) {
    const m = s.baselinePoints;
    drawPoints(s, ctx, s.baseline, k * m * 2, m, { color: colors.baseline, alpha: 0.35, radius });
  }
  if (s.x0 && s.showX0) drawPoints(s, ctx, s.x0, k * n * 2, n, { color: colors.x0, alpha: 0.5, radius: 1.5 });
  if (s.trails > 0) drawTrails(s, ctx, k);
  ctx.restore();
  s.draws += 1;
  s.root.dataset.draws = String(s.draws);
  s.root.drawMs += performance.now() - started;
}

function drawTrails(s, ctx, upto) {
  // Each chosen point's path so far: faint, older segments fainter, its point now ringed, so a few
  // noisy (DDPM) paths read as paths and not as one dark tangle.
  const v = s.view;
  const n = s.numPoints;
  const f = s.frames;
  const ids = trailIds(Math.min(s.trails, n), n);
  ctx.strokeStyle = s.payload.colors.trail;
  ctx.lineWidth = 1.0 * s.size.dpr;
  ctx.lineJoin = "round";
  const at = (k, id) => {
    const j = (k * n + id) * 2;
    const x = f[j];
    const y = f[j + 1];
    return Number.isFinite(x) && Number.isFinite(y) ? [x * v.ax + v.bx, y * v.ay + v.by] : null;
  };
  for (let k = 1; k <= upto; k++) {
    ctx.globalAlpha = 0.12 + 0.5 * (k / Math.max(upto, 1));
    ctx.beginPath();
    for (const id of ids) {
      const a = at(k - 1, id);
      const b = at(k, id);
      if (a === null || b === null) continue;
      ctx.moveTo(a[0], a[1]);
      ctx.lineTo(b[0], b[1]);
    }
    ctx.stroke();
  }
  ctx.globalAlpha = 0.9;
  ctx.beginPath();
  for (const id of ids) {
    const p = at(upto, id);
    if (p === null) continue;
    ctx.moveTo(p[0] + 3.5 * s.size.dpr, p[1]);
    ctx.arc(p[0], p[1], 3.5 * s.size.dpr, 0, 2 * Math.PI);
  }
  ctx.stroke();
  ctx.globalAlpha = 1;
}

// --- entry point ---------------------------------------------------------------------------------

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  let s = STATES.get(parentElement);
  if (!s) {
    s = build(parentElement);
    STATES.set(parentElement, s);
  }
  s.calls += 1;
  s.root.dataset.calls = String(s.calls);
  s.setStateValue = setStateValue;
  s.report = data.report !== false;
  const height = data.height ? Math.round(data.height) : null;
  if (height !== s.heightOption) {
    s.heightOption = height;
    s.size = { width: 0, height: 0, dpr: 1 }; // resize() below redraws at the new height
  }
  if (data.digest !== s.digest) {
    // new frames: start over at the payload's frame; the user's display choices stay
    pause(s);
    setData(s, data);
    applyDisplay(s, data.display, s.display);
    s.frame = Math.min(Math.max(0, data.display.frame || 0), s.numFrames - 1);
    if (s.reported === null) s.reported = JSON.stringify(currentDisplay(s));
  } else {
    s.payload = data; // the same arrays; labels, title or colours may have changed
    s.title.textContent = data.title || "";
    s.background = null;
    s.sprites.clear();
    applyDisplay(s, data.display, s.display);
  }
  attach(s);
  sync(s);
  resize(s);
  requestDraw(s);
  return () => detach(s);
}
