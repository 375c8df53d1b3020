/* The attention explorer: draws the run inlined by perceiver/viz/explorer.py on <canvas>, no library.

   window.explorer, the page state (the browser test reads it):
     data      the payload written by explorer.py (curves, summary, attention maps, colormap tables)
     state     the selectors: sample, stage (indices); head ("mean" or an index); latent ("auto" = most
               concentrated at the shown epoch, "auto-last" = most concentrated at the last saved epoch, "mean",
               or an index); epoch (index into data.attention.epochs); cmap; alpha; shared (one colour scale for
               all epochs); grey (grey image under the map); block and selfHead (latent self-attention panel)
     current   the map on screen: epoch (number), sample, stage, head, latent (the resolved index, null for the
               mean), rule, values (Float32Array: one weight per input position, in input order), vmax, argmax
     hover     the last hover read-out: {index, weight, rank, where} of an image pixel or a point, or null
     set(changes)  change selectors as the controls do, then redraw

   The address keeps the view: explorer.html#sample=2&latent=5&epoch=0 opens on it (any state key above).
*/
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("explorer-data").textContent);
  const att = data.attention;
  const $ = (id) => document.getElementById(id);
  const range = (n) => Array.from({ length: n }, (_, i) => i);
  const dpr = window.devicePixelRatio || 1;

  // ------------------------------------------------------------------------------------------- decoding
  function bytes(b64) {
    const s = atob(b64);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  const floats = (b64) => new Float32Array(bytes(b64).buffer);
  const luts = {};
  for (const [name, table] of Object.entries(data.colormaps)) luts[name] = bytes(table);

  const blocks = new Map(); // decoded maps, by kind/epoch/stage/block
  function mapBlock(kind, e, stage, block) {
    const key = `${kind}/${e}/${stage}/${block}`;
    if (!blocks.has(key)) {
      const ep = att.epochs[e];
      const src = kind === "cross" ? ep.cross[stage] : ep.self[stage][block];
      blocks.set(key, { q: bytes(src.q), peak: floats(src.peak) });
    }
    return blocks.get(key);
  }

  /* One row of an (S, heads, M, N) block for a sample: the mean over heads when head is "mean", the mean over
     rows when m is null. Stored values are q / 255 * peak of their row. */
  function mapRow(blk, H, M, N, s, head, m) {
    const out = new Float32Array(N);
    const heads = head === "mean" ? range(H) : [head];
    const rows = m === null ? range(M) : [m];
    const w = 1 / (heads.length * rows.length);
    for (const h of heads) {
      for (const r of rows) {
        const k = (s * H + h) * M + r;
        const scale = (blk.peak[k] / 255) * w;
        const off = k * N;
        for (let j = 0; j < N; j++) out[j] += blk.q[off + j] * scale;
      }
    }
    return out;
  }

  const maxOf = (a) => a.reduce((m, v) => (v > m ? v : m), 0);
  const argmaxOf = (a) => a.reduce((best, v, i) => (v > a[best] ? i : best), 0);
  const rankOf = (a, v) => 1 + a.reduce((n, x) => n + (x > v ? 1 : 0), 0);
  const fmt = (v, d = 3) => (v === null || v === undefined || !isFinite(v) ? "n/a"
    : Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(d - 1) : v.toFixed(d));
  const expTick = (v) => (v === 0 ? "0" : v.toExponential(0));
  const pct = (v) => (v === null || v === undefined ? "n/a" : (100 * v).toFixed(1) + "%");

  // --------------------------------------------------------------------------------------------- state
  const cs = att && att.cross_shape;
  const ss = att && att.self_shape;
  const state = {
    sample: 0, stage: 0, head: "mean", latent: "auto", epoch: att ? att.epochs.length - 1 : 0,
    cmap: data.defaults.cmap in luts ? data.defaults.cmap : "viridis", alpha: data.defaults.alpha,
    shared: false, grey: true, block: ss ? ss.blocks - 1 : 0, selfHead: "mean",
  };
  const explorer = { data, state, current: null, hover: null, set };
  window.explorer = explorer;

  function set(changes) {
    Object.assign(state, changes);
    syncControls();
    render();
    try { // the view in the address (#sample=2&latent=5&epoch=0...), so a link or a bookmark reopens it
      history.replaceState(null, "", "#" + Object.entries(state).map(([k, v]) => `${k}=${v}`).join("&"));
    } catch (err) { /* some browsers refuse history changes on file:// pages: the view still works */ }
  }

  const WORDS = { head: ["mean"], selfHead: ["mean"], latent: ["auto", "auto-last", "mean"] }; // non-index values
  function stateFromAddress() { // unknown keys and out-of-range values are ignored
    const limits = att ? { sample: att.samples.length, stage: cs.stages, epoch: att.epochs.length,
      head: cs.heads, latent: cs.latents, block: ss ? ss.blocks : 0, selfHead: ss ? ss.heads : 0 } : {};
    for (const pair of location.hash.slice(1).split("&")) {
      const [k, raw] = pair.split("=").map(decodeURIComponent);
      if (!(k in state) || raw === undefined) continue;
      const v = parse(raw);
      if (typeof state[k] === "boolean") state[k] = raw === "true";
      else if (k === "cmap") { if (raw in luts) state.cmap = raw; }
      else if (k === "alpha") { if (Number(raw) >= 0 && Number(raw) <= 1) state.alpha = Number(raw); }
      else if (typeof v === "number") { if (k in limits && v < limits[k]) state[k] = v; }
      else if ((WORDS[k] || []).includes(v)) state[k] = v;
    }
  }

  function resolveLatent(e) {
    const hi = state.head === "mean" ? cs.heads : state.head;
    if (state.latent === "auto") return [att.epochs[e].auto[state.stage][state.sample][hi], "most concentrated"];
    if (state.latent === "auto-last") {
      const last = att.epochs[att.epochs.length - 1];
      return [last.auto[state.stage][state.sample][hi], "most concentrated at the last epoch"];
    }
    if (state.latent === "mean") return [null, "mean of latents"];
    return [state.latent, "chosen"];
  }

  function crossValues(e) {
    const [latent, rule] = resolveLatent(e);
    const blk = mapBlock("cross", e, state.stage, 0);
    return { latent, rule, values: mapRow(blk, cs.heads, cs.latents, cs.positions, state.sample, state.head, latent) };
  }

  function computeCurrent() {
    const c = crossValues(state.epoch);
    let vmax = maxOf(c.values);
    if (state.shared) for (const e of range(att.epochs.length)) vmax = Math.max(vmax, maxOf(crossValues(e).values));
    explorer.current = {
      epoch: att.epochs[state.epoch].epoch, sample: state.sample, stage: state.stage, head: state.head,
      latent: c.latent, rule: c.rule, values: c.values, vmax: vmax || 1, argmax: argmaxOf(c.values),
    };
  }

  // ------------------------------------------------------------------------------------------ controls
  function fill(select, options) {
    select.innerHTML = "";
    for (const [value, text] of options) select.add(new Option(text, String(value)));
  }
  const parse = (v) => (/^\d+$/.test(v) ? Number(v) : v);

  function buildControls() {
    const names = att.class_names;
    fill($("sel-sample"), att.samples.map((s, i) => [i, `${i}: ${names[s.label] ?? s.label} (probe #${s.index})`]));
    fill($("sel-stage"), range(cs.stages).map((i) => [i, `stage ${i}`]));
    fill($("sel-head"), [["mean", "mean of heads"], ...range(cs.heads).map((i) => [i, `head ${i}`])]);
    fill($("sel-latent"), [["auto", "most concentrated"], ["auto-last", "most concentrated at the last epoch"],
      ["mean", "mean of latents"], ...range(cs.latents).map((i) => [i, `latent ${i}`])]);
    fill($("sel-cmap"), Object.keys(luts).map((n) => [n, n]));
    $("sel-epoch").max = String(att.epochs.length - 1);
    if (ss) {
      fill($("sel-block"), range(ss.blocks).map((i) => [i, `block ${i}`]));
      fill($("sel-self-head"), [["mean", "mean of heads"], ...range(ss.heads).map((i) => [i, `head ${i}`])]);
    }
    const bind = (id, key, read = (el) => parse(el.value)) => {
      $(id).addEventListener(id === "sel-epoch" || id === "sel-alpha" ? "input" : "change",
        (ev) => set({ [key]: read(ev.target) }));
    };
    bind("sel-sample", "sample");
    bind("sel-stage", "stage");
    bind("sel-head", "head");
    bind("sel-latent", "latent");
    bind("sel-epoch", "epoch");
    bind("sel-cmap", "cmap", (el) => el.value);
    bind("sel-alpha", "alpha", (el) => Number(el.value));
    bind("sel-shared", "shared", (el) => el.checked);
    bind("sel-grey", "grey", (el) => el.checked);
    bind("sel-block", "block");
    bind("sel-self-head", "selfHead");
    let timer = null;
    $("play").addEventListener("click", () => {
      if (timer) { clearInterval(timer); timer = null; $("play").textContent = "▶"; return; }
      $("play").textContent = "■";
      timer = setInterval(() => set({ epoch: (state.epoch + 1) % att.epochs.length }), 800);
    });
    $("grey-control").hidden = att.kind !== "image";
  }

  function syncControls() {
    $("sel-sample").value = String(state.sample);
    $("sel-stage").value = String(state.stage);
    $("sel-head").value = String(state.head);
    $("sel-latent").value = String(state.latent);
    $("sel-epoch").value = String(state.epoch);
    $("sel-cmap").value = state.cmap;
    $("sel-alpha").value = String(state.alpha);
    $("sel-shared").checked = state.shared;
    $("sel-grey").checked = state.grey;
    if (ss) { $("sel-block").value = String(state.block); $("sel-self-head").value = String(state.selfHead); }
    const n = att.epochs.length;
    $("epoch-label").textContent = `${att.epochs[state.epoch].epoch} (${state.epoch + 1} of ${n} shown)`;
    $("alpha-label").textContent = Number(state.alpha).toFixed(2);
  }

  // ------------------------------------------------------------------------------------- colour helpers
  function colour(t) { // t in [0, 1] -> [r, g, b] of the current colormap
    const lut = luts[state.cmap];
    const i = 3 * Math.max(0, Math.min(255, Math.round(t * 255)));
    return [lut[i], lut[i + 1], lut[i + 2]];
  }
  function sizeCanvas(canvas) { // backing store in device pixels; returns the CSS size
    const w = canvas.clientWidth, h = canvas.clientHeight;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return [w, h, ctx];
  }
  function drawColorbar() {
    const [w, h, ctx] = sizeCanvas($("colorbar"));
    for (let x = 0; x < w; x++) {
      const [r, g, b] = colour(x / Math.max(1, w - 1));
      ctx.fillStyle = `rgb(${r},${g},${b})`;
      ctx.fillRect(x, 0, 1, h);
    }
    const c = explorer.current;
    $("cb-max").textContent = `${fmt(c.vmax, 4)} (${(c.vmax * cs.positions).toFixed(1)}× uniform)`;
  }

  // -------------------------------------------------------------------------------------- image panel
  let images = null;
  function drawImage() {
    const [H, W] = att.image_shape;
    const rgb = images[state.sample];
    const c = explorer.current;
    const off = document.createElement("canvas");
    off.width = W;
    off.height = H;
    const octx = off.getContext("2d");
    const px = octx.createImageData(W, H);
    const a = state.alpha;
    for (let p = 0; p < W * H; p++) {
      const r = rgb[3 * p], g = rgb[3 * p + 1], b = rgb[3 * p + 2];
      const grey = 0.299 * r + 0.587 * g + 0.114 * b;
      const base = state.grey ? [grey, grey, grey] : [r, g, b];
      const heat = colour(c.values[p] / c.vmax);
      for (let k = 0; k < 3; k++) px.data[4 * p + k] = (1 - a) * base[k] + a * heat[k];
      px.data[4 * p + 3] = 255;
    }
    octx.putImageData(px, 0, 0);
    const canvas = $("input-canvas");
    canvas.style.height = `${(canvas.clientWidth * H) / W}px`;
    const [cw, ch, ctx] = sizeCanvas(canvas);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, 0, 0, cw, ch);
    if (explorer.hover) { // outline the pixel under the pointer
      const x = explorer.hover.index % W, y = Math.floor(explorer.hover.index / W);
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 1.5;
      ctx.strokeRect((x * cw) / W, (y * ch) / H, cw / W, ch / H);
    }
  }

  function imageHover(ev) {
    const [H, W] = att.image_shape;
    const canvas = $("input-canvas");
    const x = Math.floor((ev.offsetX / canvas.clientWidth) * W), y = Math.floor((ev.offsetY / canvas.clientHeight) * H);
    if (x < 0 || y < 0 || x >= W || y >= H) return;
    showHover(y * W + x, `pixel (x ${x}, y ${y})`);
    drawImage();
  }

  function showHover(index, where) {
    const v = explorer.current.values;
    const weight = v[index], rank = rankOf(v, weight);
    explorer.hover = { index, weight, rank, where };
    const uniform = (weight * v.length).toFixed(2);
    $("input-readout").textContent = `${where}: weight ${fmt(weight, 5)} (${uniform}× uniform), `
      + `rank ${rank} of ${v.length}`;
  }

  // --------------------------------------------------------------------------------- point-cloud panel
  let clouds = null;
  const view = { yaw: -1.0, pitch: 0.35, zoom: 1.0 };
  let projected = []; // [screen x, screen y, index] of the points drawn, for hovering
  function drawCloud() {
    const pts = clouds[state.sample];
    const n = pts.length / 3;
    const c = explorer.current;
    const canvas = $("input-canvas");
    const [w, h, ctx] = sizeCanvas(canvas);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, w, h);
    const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
    for (let i = 0; i < n; i++) for (let k = 0; k < 3; k++) {
      lo[k] = Math.min(lo[k], pts[3 * i + k]);
      hi[k] = Math.max(hi[k], pts[3 * i + k]);
    }
    const mid = lo.map((l, k) => (l + hi[k]) / 2);
    let radius = 1e-6; // of the bounding sphere about the box centre: the cloud stays inside at any angle
    for (let i = 0; i < n; i++) {
      radius = Math.max(radius, Math.hypot(pts[3 * i] - mid[0], pts[3 * i + 1] - mid[1], pts[3 * i + 2] - mid[2]));
    }
    const scale = (0.48 * Math.min(w, h) * view.zoom) / radius;
    const [cy, sy, cp, sp] = [Math.cos(view.yaw), Math.sin(view.yaw), Math.cos(view.pitch), Math.sin(view.pitch)];
    const items = [];
    for (let i = 0; i < n; i++) {
      const x = pts[3 * i] - mid[0], y = pts[3 * i + 1] - mid[1], z = pts[3 * i + 2] - mid[2];
      const xr = x * cy - y * sy, yr = x * sy + y * cy; // turn about the vertical (z) axis, then tilt
      items.push([w / 2 + scale * xr, h / 2 - scale * (z * cp - yr * sp), yr * cp + z * sp, i]);
    }
    items.sort((a, b) => b[2] - a[2]); // far (large depth) first
    const size = Math.max(1.5, Math.min(6, 60 / Math.sqrt(n)));
    for (const [sx, sy2, , i] of items) {
      const t = c.values[i] / c.vmax;
      const [r, g, b] = colour(t);
      ctx.fillStyle = `rgba(${r},${g},${b},${Math.max(0.35, state.alpha)})`;
      ctx.beginPath();
      ctx.arc(sx, sy2, size * (0.7 + 0.9 * t), 0, 2 * Math.PI);
      ctx.fill();
    }
    projected = items;
    if (explorer.hover) {
      const p = items.find((it) => it[3] === explorer.hover.index);
      if (p) {
        ctx.strokeStyle = "#000";
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        ctx.arc(p[0], p[1], size * 2.2, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
    const ox = w - 34, oy = h - 34; // axis triad, turned like the cloud
    ctx.font = "11px sans-serif";
    ctx.lineWidth = 1;
    [[1, 0, 0, "x"], [0, 1, 0, "y"], [0, 0, 1, "z"]].forEach(([x, y, z, label]) => {
      const xr = x * cy - y * sy, yr = x * sy + y * cy;
      const ex = ox + 20 * xr, ey = oy - 20 * (z * cp - yr * sp);
      ctx.strokeStyle = ctx.fillStyle = "#888";
      ctx.beginPath(); ctx.moveTo(ox, oy); ctx.lineTo(ex, ey); ctx.stroke();
      ctx.fillText(label, ex + 2, ey + 4);
    });
    ctx.fillText("drag to rotate, wheel to zoom", 6, h - 6);
  }

  function cloudEvents() {
    const canvas = $("input-canvas");
    let drag = null;
    canvas.addEventListener("mousedown", (ev) => { drag = [ev.clientX, ev.clientY]; });
    window.addEventListener("mouseup", () => { drag = null; });
    canvas.addEventListener("mousemove", (ev) => {
      if (drag) {
        view.yaw += (ev.clientX - drag[0]) * 0.01;
        view.pitch = Math.max(-1.5, Math.min(1.5, view.pitch + (ev.clientY - drag[1]) * 0.01));
        drag = [ev.clientX, ev.clientY];
        drawCloud();
        return;
      }
      let best = null, bestD = 64; // within 8 px; the nearest, front-most point wins
      for (let k = projected.length - 1; k >= 0; k--) {
        const [x, y, , i] = projected[k];
        const d = (x - ev.offsetX) ** 2 + (y - ev.offsetY) ** 2;
        if (d < bestD) { bestD = d; best = i; }
      }
      if (best === null) return;
      const p = clouds[state.sample];
      showHover(best, `point ${best} (${fmt(p[3 * best], 2)}, ${fmt(p[3 * best + 1], 2)}, ${fmt(p[3 * best + 2], 2)})`);
      drawCloud();
    });
    canvas.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      view.zoom = Math.max(0.3, Math.min(6, view.zoom * Math.exp(-ev.deltaY * 0.001)));
      drawCloud();
    }, { passive: false });
  }

  // ------------------------------------------------------------------------------ self-attention panel
  let selfCells = null; // [M, stage, block] of the matrix on screen, for hovering
  function drawSelf() {
    if (!ss) return;
    const M = ss.latents, stage = Math.min(state.stage, ss.stages - 1);
    const blk = mapBlock("self", state.epoch, stage, state.block);
    const matrix = range(M).map((m) => mapRow(blk, ss.heads, M, M, state.sample, state.selfHead, m));
    const vmax = Math.max(...matrix.map(maxOf)) || 1;
    const off = document.createElement("canvas");
    off.width = M;
    off.height = M;
    const octx = off.getContext("2d");
    const px = octx.createImageData(M, M);
    matrix.forEach((row, i) => row.forEach((v, j) => {
      const [r, g, b] = colour(v / vmax);
      px.data.set([r, g, b, 255], 4 * (i * M + j));
    }));
    octx.putImageData(px, 0, 0);
    const [w, h, ctx] = sizeCanvas($("self-canvas"));
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, 0, 0, w, h);
    const m = explorer.current.latent;
    if (m !== null) { // the selected latent's row (its attention over the other latents)
      const y = (m * h) / M;
      ctx.lineWidth = 2;
      ctx.strokeStyle = "#fff";
      ctx.strokeRect(1, y, w - 2, h / M);
      ctx.lineWidth = 1;
      ctx.strokeStyle = data.colors.accent;
      ctx.strokeRect(1, y, w - 2, h / M);
    }
    selfCells = { M, matrix, stage };
    $("self-panel").dataset.stage = String(stage);
    $("self-panel").dataset.highlight = m === null ? "" : String(m);
  }

  function selfEvents() {
    const canvas = $("self-canvas");
    const cell = (ev) => {
      const M = selfCells.M;
      return [Math.floor((ev.offsetY / canvas.clientHeight) * M), Math.floor((ev.offsetX / canvas.clientWidth) * M)];
    };
    canvas.addEventListener("mousemove", (ev) => {
      const [i, j] = cell(ev);
      if (i < 0 || j < 0 || i >= selfCells.M || j >= selfCells.M) return;
      const row = selfCells.matrix[i];
      $("self-readout").textContent = `latent ${i} → latent ${j}: weight ${fmt(row[j], 4)}, `
        + `rank ${rankOf(row, row[j])} of ${row.length} in row ${i}`;
    });
    canvas.addEventListener("click", (ev) => set({ latent: cell(ev)[0] }));
  }

  // ------------------------------------------------------------------------------------------ charts
  function niceTicks(lo, hi, count, integer = false) {
    if (!(hi > lo)) return [lo];
    const step0 = (hi - lo) / count, mag = 10 ** Math.floor(Math.log10(step0));
    let step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= step0);
    if (integer) step = Math.max(1, Math.round(step));
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  /* A line chart: spec {title, x, series: [{label, color, y}], log, tick (y label), value (tooltip), xName,
     marker (an x drawn as a dashed line), onClick(x)}. Hover shows every series at the nearest x. */
  function lineChart(canvas, spec) {
    const chart = { canvas, spec, hover: null };
    const M = { l: 48, r: 8, t: 34, b: 26 };
    const tf = (v) => (spec.log ? Math.log10(v) : v);
    const ys = spec.series.flatMap((s) => s.y).filter((v) => v !== null && isFinite(v) && (!spec.log || v > 0));
    let lo = Math.min(...ys.map(tf)), hi = Math.max(...ys.map(tf));
    if (hi === lo) { lo -= 0.5; hi += 0.5; }
    const pad = (hi - lo) * 0.06;
    lo -= pad; hi += pad;
    const xlo = Math.min(...spec.x), xhi = Math.max(...spec.x) === xlo ? xlo + 1 : Math.max(...spec.x);
    chart.draw = function () {
      const [w, h, ctx] = sizeCanvas(canvas);
      const X = (x) => M.l + ((x - xlo) / (xhi - xlo)) * (w - M.l - M.r);
      const Y = (v) => h - M.b - ((tf(v) - lo) / (hi - lo)) * (h - M.t - M.b);
      chart.X = X;
      ctx.clearRect(0, 0, w, h);
      ctx.font = "11px sans-serif";
      ctx.fillStyle = "#222";
      ctx.fillText(spec.title, M.l, 12);
      ctx.strokeStyle = "#e3e3e3";
      ctx.fillStyle = "#666";
      ctx.lineWidth = 1;
      const yt = spec.log ? niceTicks(lo, hi, 4).map((v) => 10 ** v) : niceTicks(lo, hi, 5);
      for (const v of yt) {
        const y = Y(v);
        if (y < M.t - 1 || y > h - M.b + 1) continue;
        ctx.beginPath(); ctx.moveTo(M.l, y); ctx.lineTo(w - M.r, y); ctx.stroke();
        ctx.textAlign = "right"; ctx.fillText(spec.tick(v), M.l - 4, y + 3);
      }
      ctx.textAlign = "center";
      for (const x of niceTicks(xlo, xhi, 5, true)) ctx.fillText(String(x), X(x), h - M.b + 13);
      ctx.fillText(spec.xName, (M.l + w - M.r) / 2, h - 2);
      ctx.textAlign = "left";
      if (spec.marker !== undefined && spec.marker !== null) {
        ctx.strokeStyle = data.colors.accent; ctx.setLineDash([4, 3]);
        ctx.beginPath(); ctx.moveTo(X(spec.marker), M.t); ctx.lineTo(X(spec.marker), h - M.b); ctx.stroke();
        ctx.setLineDash([]);
      }
      for (const s of spec.series) {
        ctx.strokeStyle = s.color; ctx.fillStyle = s.color; ctx.lineWidth = 1.6;
        ctx.beginPath();
        let pen = false;
        s.y.forEach((v, i) => {
          if (v === null || !isFinite(v) || (spec.log && v <= 0)) { pen = false; return; }
          if (pen) ctx.lineTo(X(spec.x[i]), Y(v)); else ctx.moveTo(X(spec.x[i]), Y(v));
          pen = true;
        });
        ctx.stroke();
        if (spec.x.length <= 40) { // dots on the epochs when there are few
          s.y.forEach((v, i) => {
            if (v === null || !isFinite(v) || (spec.log && v <= 0)) return;
            ctx.beginPath();
            ctx.arc(X(spec.x[i]), Y(v), 2, 0, 2 * Math.PI);
            ctx.fill();
          });
        }
      }
      let lx = M.l; // legend, under the title
      const ly = 27;
      for (const s of spec.series) {
        ctx.fillStyle = s.color; ctx.fillRect(lx, ly - 6, 10, 3);
        ctx.fillStyle = "#333"; ctx.fillText(s.label, lx + 13, ly - 1);
        lx += 20 + ctx.measureText(s.label).width;
      }
      if (chart.hover !== null) {
        const x = X(spec.x[chart.hover]);
        ctx.strokeStyle = "#999"; ctx.beginPath(); ctx.moveTo(x, M.t); ctx.lineTo(x, h - M.b); ctx.stroke();
      }
    };
    const nearest = (ev) => {
      let best = 0;
      const gap = (i) => Math.abs(chart.X(spec.x[i]) - ev.offsetX);
      spec.x.forEach((_, i) => { if (gap(i) < gap(best)) best = i; });
      return best;
    };
    canvas.addEventListener("mousemove", (ev) => {
      chart.hover = nearest(ev);
      chart.draw();
      const tip = $("chart-tip"), i = chart.hover;
      tip.innerHTML = "";
      const head = document.createElement("b");
      head.textContent = spec.xLabel(i);
      tip.append(head);
      for (const s of spec.series) {
        const line = document.createElement("div");
        line.style.color = s.color;
        line.textContent = `${s.label}: ${spec.value(s.y[i])}`;
        tip.append(line);
      }
      const box = $("curves-card").getBoundingClientRect(), r = canvas.getBoundingClientRect();
      tip.hidden = false;
      tip.style.left = `${Math.min(r.left - box.left + ev.offsetX + 12, box.width - tip.offsetWidth - 4)}px`;
      tip.style.top = `${r.top - box.top + ev.offsetY + 12}px`;
    });
    canvas.addEventListener("mouseleave", () => { chart.hover = null; chart.draw(); $("chart-tip").hidden = true; });
    if (spec.onClick) canvas.addEventListener("click", (ev) => spec.onClick(spec.x[nearest(ev)]));
    return chart;
  }

  const charts = [];
  function buildCharts() {
    const cv = data.curves;
    if (!cv) { $("curves-card").hidden = true; return; }
    const C = data.colors, sr = cv.series;
    const pick = (list) => list.filter(([k]) => k in sr).map(([k, label, color]) => ({ label, color, y: sr[k] }));
    const saved = att ? att.epochs.map((e) => e.epoch) : [];
    const toSaved = (x) => {
      if (!saved.length) return;
      const i = saved.reduce((b, e, k) => (Math.abs(e - x) < Math.abs(saved[b] - x) ? k : b), 0);
      set({ epoch: i });
    };
    const epochTip = (i) => `epoch ${cv.epochs[i]}` + (saved.includes(cv.epochs[i]) ? " (maps saved)" : "");
    const acc = pick([["train_acc", "train", C.train], ["test_acc", "test", C.test], ["val_acc", "val", C.val],
      ["test_acc_top5", "test top-5", C.top5]]);
    if (acc.length) {
      charts.push(lineChart($("chart-acc"), { title: "Accuracy", x: cv.epochs, series: acc, xName: "epoch",
        tick: (v) => `${Math.round(v * 100)}%`, value: pct, xLabel: epochTip, onClick: toSaved, isEpoch: true }));
    }
    const loss = pick([["train_loss", "train", C.train], ["test_loss", "test", C.test], ["val_loss", "val", C.val]]);
    if (loss.length) charts.push(lineChart($("chart-loss"), { title: "Loss" + (cv.log_loss ? " (log scale)" : ""),
      x: cv.epochs, series: loss, log: cv.log_loss, xName: "epoch", tick: (v) => fmt(v, 2), value: (v) => fmt(v, 4),
      xLabel: epochTip, onClick: toSaved, isEpoch: true }));
    if (cv.steps) {
      charts.push(lineChart($("chart-lr"), { title: "Learning rate (per step)", x: cv.steps.step,
        series: [{ label: "lr", color: C.accent, y: cv.steps.lr }], xName: "optimizer step", tick: expTick,
        value: (v) => fmt(v, 3), xLabel: (i) => `step ${cv.steps.step[i]} (epoch ${cv.steps.epoch[i]})` }));
    } else if ("lr" in sr) {
      charts.push(lineChart($("chart-lr"), { title: "Learning rate", x: cv.epochs,
        series: [{ label: "lr", color: C.accent, y: sr.lr }],
        xName: "epoch", tick: expTick, value: (v) => fmt(v, 3), xLabel: epochTip, isEpoch: true }));
    }
    for (const id of ["chart-acc", "chart-loss", "chart-lr"]) {
      if (!charts.some((c) => c.canvas.id === id)) $(id).parentElement.hidden = true;
    }
  }
  function drawCharts() {
    for (const c of charts) {
      if (c.spec.isEpoch && att) c.spec.marker = att.epochs[state.epoch].epoch;
      c.draw();
    }
  }

  // ------------------------------------------------------------------------------------------ render
  function render() {
    if (!att) { drawCharts(); return; }
    computeCurrent();
    const c = explorer.current, ep = att.epochs[state.epoch], names = att.class_names;
    const head = state.head === "mean" ? "mean of heads" : `head ${state.head}`;
    const rule = c.rule === "chosen" ? "" : ` (${c.rule})`;
    const who = c.latent === null ? "mean of latents" : `latent ${c.latent}${rule}`;
    $("input-title").textContent = `Cross-attention, stage ${state.stage}, ${head}, ${who}, epoch ${c.epoch}`;
    const s = att.samples[state.sample], pred = ep.preds[state.sample];
    $("sample-caption").textContent = `probe #${s.index} · true: ${names[s.label] ?? s.label} · predicted: `
      + `${names[pred] ?? pred} (${pct(ep.probs[state.sample])}) · ${pred === s.label ? "correct" : "wrong"}`;
    if (explorer.hover) showHover(explorer.hover.index, explorer.hover.where); // the same position, new map
    if (att.kind === "image") drawImage(); else drawCloud();
    drawColorbar();
    drawSelf();
    drawCharts();
    const panel = $("input-panel");
    panel.dataset.epoch = String(c.epoch);
    panel.dataset.latent = c.latent === null ? "mean" : String(c.latent);
    panel.dataset.argmax = String(c.argmax);
  }

  function describeRun() {
    document.title = `${data.title} · attention explorer`;
    $("title").textContent = data.title;
    const parts = [];
    if (att) {
      parts.push(att.kind === "image" ? `image run, ${att.image_shape.join("×")}`
        : `point-cloud run, ${cs.positions} points`);
      if (att.permuted) parts.push("pixels permuted for the model; maps shown in image order");
      parts.push(`${cs.latents} latents × ${cs.positions} input positions, `
        + `${cs.stages} cross-attention stage(s), ${cs.heads} head(s)`);
    }
    $("subtitle").textContent = parts.join(" · ");
    const table = $("summary");
    for (const [k, v] of data.summary) {
      const tr = table.insertRow();
      tr.insertCell().textContent = k;
      tr.insertCell().textContent = v;
    }
    $("footer").textContent = "Written by perceiver/viz/explorer.py; works offline. " + (att
      ? `Maps of ${att.epochs.length} of ${att.saved_epochs.length} saved epochs and ${att.samples.length} of `
        + `${att.probe_count} probe samples, stored as 8-bit values scaled per row `
        + "(error under 0.2 % of each row's peak)."
      : "");
  }

  function main() {
    describeRun();
    buildCharts();
    if (!att) {
      $("attention-body").hidden = true;
      $("no-attention").hidden = false;
      render();
      return;
    }
    if (att.kind === "image") {
      images = att.inputs.map(bytes);
      $("input-canvas").addEventListener("mousemove", imageHover);
    } else {
      clouds = att.inputs.map(floats);
      cloudEvents();
    }
    if (ss) selfEvents(); else { $("self-canvas").parentElement.hidden = true; $("no-self").hidden = false; }
    $("attention-note").textContent = `hover a ${att.kind === "image" ? "pixel" : "point"} for its weight and rank`;
    buildControls();
    stateFromAddress();
    syncControls();
    render();
    window.addEventListener("resize", render);
  }

  main();
})();
