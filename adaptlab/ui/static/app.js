// adaptlab workbench: live compare progress, interactive report charts, playground. Plain JS, no libraries.
"use strict";
const $ = (sel, root = document) => root.querySelector(sel);
const csrf = () => $('meta[name="csrf-token"]').content;
const SVGNS = "http://www.w3.org/2000/svg";
const COLORS = ["#2456c7", "#d1495b", "#1d7a46", "#9a6700", "#7b3fb5", "#0f8b8d", "#c05621", "#4a5568", "#b83280"];

function el(tag, attrs = {}, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// Anything that may take over a second says so.
let busyTimer = null;
function busy(on, what = "working…") {
  const b = $("#busy");
  clearTimeout(busyTimer);
  if (!on) { b.hidden = true; return; }
  busyTimer = setTimeout(() => { b.textContent = what; b.hidden = false; }, 300);
}
document.addEventListener("submit", (ev) => {
  const f = ev.target;
  if (f.hasAttribute("data-busy")) { busy(true); const b = f.querySelector("button[type=submit],button:not([type])"); if (b) setTimeout(() => { b.disabled = true; }, 0); }
});

async function api(url, body) {
  const opts = body === undefined ? {headers: {"Accept": "application/json"}} :
    {method: "POST", headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf()}, body: JSON.stringify(body)};
  const r = await fetch(url, opts);
  const data = await r.json().catch(() => ({error: `HTTP ${r.status}`}));
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}

// ------------------------------------------------------------------ a compare, live
function watchJob(box) {
  const id = box.dataset.job;
  if (box.dataset.state !== "running") return;
  const es = new EventSource(`/ui/api/compare/${id}/events`);
  es.onmessage = (m) => {
    const s = JSON.parse(m.data);
    $("#state").textContent = s.state; $("#state").className = `state ${s.state}`;
    $("#done").textContent = s.done;
    if (s.planned && $("#planned")) $("#planned").textContent = s.planned;
    $("#bar").max = s.planned || 1; $("#bar").value = s.done;
    $("#eta").textContent = s.eta_s != null ? ` · ETA ${(s.eta_s / 60).toFixed(1)} min` : "";
    const c = s.current;
    $("#current").textContent = c ? `Now: ${c.id}` + (c.step ? `, step ${c.step} of ${c.of}, loss ${c.loss.toFixed(4)}` : "")
      + ` (${Math.round(c.elapsed_s)} s of about ${Math.round(c.estimate_s)} s)` : (s.phase || "");
    $("#log").textContent = s.log.join("\n");
    if (s.state !== "running") {
      es.close();
      if (s.report) $("#to-report").hidden = false; else location.reload();
    }
  };
  es.onerror = () => { es.close(); setTimeout(() => location.reload(), 3000); };
}

// ------------------------------------------------------------------ charts
function tipFor(box) {
  let tip = box.querySelector(".tip");
  if (!tip) { tip = el("div", {class: "tip", role: "tooltip", hidden: ""}); box.appendChild(tip); }
  return (text, x, y) => {
    if (text === null) { tip.hidden = true; return; }
    tip.textContent = text; tip.hidden = false;
    const r = box.getBoundingClientRect();
    tip.style.left = `${Math.min(x - r.left + 10, r.width - 160)}px`; tip.style.top = `${y - r.top - 30}px`;
  };
}

function pointWithTip(svg, show, x, y, color, label, filled = true) {
  const c = el("svg:circle", {cx: x, cy: y, r: 5, fill: filled ? color : "#fff", stroke: color, "stroke-width": 2,
                              tabindex: 0, role: "img", "aria-label": label});
  c.appendChild(el("svg:title", {}, label));
  const on = (ev) => { const b = c.getBoundingClientRect(); show(label, b.left + b.width / 2, b.top); };
  c.addEventListener("mouseenter", on); c.addEventListener("focus", on);
  c.addEventListener("mouseleave", () => show(null)); c.addEventListener("blur", () => show(null));
  svg.appendChild(c);
}

function axes(svg, W, H, P, xt, yt, xlab, ylab) {
  svg.appendChild(el("svg:line", {x1: P, y1: H - P, x2: W - 10, y2: H - P, stroke: "#888"}));
  svg.appendChild(el("svg:line", {x1: P, y1: 10, x2: P, y2: H - P, stroke: "#888"}));
  for (const [pos, text] of xt) svg.appendChild(el("svg:text", {x: pos, y: H - P + 16, "font-size": 11, "text-anchor": "middle", fill: "#555"}, text));
  for (const [pos, text] of yt) svg.appendChild(el("svg:text", {x: P - 6, y: pos + 4, "font-size": 11, "text-anchor": "end", fill: "#555"}, text));
  svg.appendChild(el("svg:text", {x: (W + P) / 2, y: H - 4, "font-size": 12, "text-anchor": "middle", fill: "#333"}, xlab));
  svg.appendChild(el("svg:text", {x: 12, y: 12, "font-size": 12, fill: "#333"}, ylab));
}

function drawCurves(box, data, hidden) {
  box.querySelectorAll("svg").forEach((s) => s.remove());
  const W = 560, H = 320, P = 48, svg = el("svg:svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `learning curves, ${data.metric} by train size`});
  const names = Object.keys(data.curves), all = names.flatMap((s) => data.curves[s]);
  const sizes = all.map((p) => p.n).filter((n) => n > 0);
  const lo = Math.log(Math.min(...sizes, 8)), hi = Math.log(Math.max(...sizes, 16));
  const qs = all.map((p) => p.quality), qlo = Math.max(0, Math.min(...qs) - 0.05), qhi = Math.min(1, Math.max(...qs) + 0.05);
  const X = (n) => P + (W - P - 20) * (Math.log(n) - lo) / (hi - lo || 1), Y = (q) => H - P - (H - P - 20) * (q - qlo) / (qhi - qlo || 1);
  const ticks = [...new Set(sizes)].sort((a, b) => a - b).map((n) => [X(n), String(n)]);
  const yt = [0, 0.25, 0.5, 0.75, 1].map((f) => qlo + f * (qhi - qlo)).map((q) => [Y(q), q.toFixed(2)]);
  axes(svg, W, H, P, ticks, yt, "train examples (log scale)", data.metric);
  const show = tipFor(box);
  names.forEach((s, i) => {
    if (hidden.has(s)) return;
    const color = COLORS[i % COLORS.length], pts = data.curves[s];
    if (pts.every((p) => p.n === 0)) {  // zero-shot: no training, one level across
      const y = Y(pts[0].quality);
      svg.appendChild(el("svg:line", {x1: P, x2: W - 10, y1: y, y2: y, stroke: color, "stroke-dasharray": "5 4"}));
      pointWithTip(svg, show, P + 8, y, color, `${s}: ${pts[0].quality.toFixed(3)} (no training)`);
      return;
    }
    const line = pts.filter((p) => p.n > 0).map((p) => `${X(p.n)},${Y(p.quality)}`).join(" ");
    svg.appendChild(el("svg:polyline", {points: line, fill: "none", stroke: color, "stroke-width": 2}));
    for (const p of pts.filter((p) => p.n > 0))
      pointWithTip(svg, show, X(p.n), Y(p.quality), color, `${s} at ${p.n}: ${p.quality.toFixed(3)}` + (p.seeds > 1 ? ` ± ${p.std.toFixed(3)} (${p.seeds} seeds)` : ""));
  });
  box.prepend(svg);
}

function drawPareto(box, data) {
  const W = 560, H = 320, P = 48, svg = el("svg:svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "quality against training minutes"});
  const pts = data.points, xs = pts.map((p) => p.train_minutes), qs = pts.map((p) => p.quality);
  const xhi = Math.max(...xs, 0.1) * 1.08, qlo = Math.max(0, Math.min(...qs) - 0.05), qhi = Math.min(1, Math.max(...qs) + 0.05);
  const X = (m) => P + (W - P - 20) * m / xhi, Y = (q) => H - P - (H - P - 20) * (q - qlo) / (qhi - qlo || 1);
  const fmt = (v) => v === 0 ? "0" : v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toPrecision(2);
  axes(svg, W, H, P, [0, 0.5, 1].map((f) => [X(f * xhi), fmt(f * xhi)]),
       [0, 0.5, 1].map((f) => qlo + f * (qhi - qlo)).map((q) => [Y(q), q.toFixed(2)]), "training minutes", data.metric);
  const show = tipFor(box), names = Object.keys(data.curves);
  for (const p of pts) {
    const color = COLORS[names.indexOf(p.strategy) % COLORS.length];
    pointWithTip(svg, show, X(p.train_minutes), Y(p.quality), color,
      `${p.strategy} at ${p.n}: ${p.quality.toFixed(3)}, ${p.train_minutes.toFixed(2)} min, ${p.peak_rss_gb.toFixed(1)} GB, $${p.usd_per_1m.toFixed(2)}/1M`, p.front);
    svg.appendChild(el("svg:text", {x: X(p.train_minutes) + 8, y: Y(p.quality) - 8, "font-size": 11, fill: "#333"}, p.strategy));
  }
  box.prepend(svg);
}

function report() {
  const data = JSON.parse($("#report-data").textContent), hidden = new Set(), toggles = $("#curve-toggles");
  Object.keys(data.curves).forEach((s, i) => {
    const lab = el("label"), cb = el("input", {type: "checkbox", checked: ""});
    cb.addEventListener("change", () => { cb.checked ? hidden.delete(s) : hidden.add(s); drawCurves($("#curves"), data, hidden); });
    const sw = el("span", {"aria-hidden": "true"}, "■"); sw.style.color = COLORS[i % COLORS.length];
    lab.append(cb, sw, document.createTextNode(" " + s)); toggles.appendChild(lab);
  });
  drawCurves($("#curves"), data, hidden);
  drawPareto($("#pareto"), data);
  const form = $("#constraints");
  const update = async () => {
    const q = new URLSearchParams(new FormData(form));
    busy(true, "recomputing…");
    try {
      const rec = await api(`${form.dataset.api}?${q}`);
      $("#winner").textContent = rec.winner || "nothing meets the constraints";
      $("#reasons").replaceChildren(...rec.reasons.map((r) => el("li", {}, r)));
      $("#ranked tbody").replaceChildren(...rec.ranked.map((r, i) => {
        const tr = el("tr");
        const q = r.quality.toFixed(3) + (r.predicted ? ` (predicted ${r.lo.toFixed(3)}–${r.hi.toFixed(3)})` : "");
        for (const [t, cls] of [[i + 1, ""], [r.strategy, ""], [q, "num"], [r.train_size, "num"], [r.usd_per_1m.toFixed(2), "num"]])
          tr.appendChild(el("td", cls ? {class: cls} : {}, String(t)));
        return tr;
      }));
      $("#excluded").replaceChildren(...rec.excluded.map((x) => el("li", {}, `${x.strategy}: ${x.why}`)));
      history.replaceState(null, "", `?${q}`);
    } catch (e) {
      $("#reasons").replaceChildren(el("li", {class: "error", role: "alert"}, e.message));
    } finally { busy(false); }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); update(); });
  form.addEventListener("change", update);
}

// ------------------------------------------------------------------ playground
function answerCard(a) {
  const card = el("section", {class: "card answer", "aria-label": `answer of ${a.model}`});
  card.appendChild(el("h3", {}, a.model));
  if (a.error) { card.appendChild(el("p", {class: "error", role: "alert"}, a.error)); return card; }
  card.appendChild(el("p", {class: "muted"}, `${a.task_type} · ${a.kind} · ${a.latency_ms} ms`));
  card.appendChild(el("p", {class: "out"}, a.output));
  for (const p of a.probs || []) {
    const row = el("div", {class: "prob"}), bar = el("svg:svg", {viewBox: "0 0 100 10", preserveAspectRatio: "none", "aria-hidden": "true"});
    bar.append(el("svg:rect", {class: "track", x: 0, y: 0, width: 100, height: 10}), el("svg:rect", {class: "fill", x: 0, y: 0, width: (100 * p.p).toFixed(1), height: 10}));
    row.append(el("span", {}, p.label), bar, el("span", {}, p.p.toFixed(3)));
    card.appendChild(row);
  }
  if (!a.request_id) { card.appendChild(el("p", {class: "muted"}, "The base model is not a registry task: nothing to rate.")); return card; }
  const form = el("form", {class: "rate"}), id = a.request_id;
  form.innerHTML = `<fieldset><legend>Rate</legend>
    <label><input type="radio" name="rating" value="1"> good</label>
    <label><input type="radio" name="rating" value="0"> neutral</label>
    <label><input type="radio" name="rating" value="-1"> bad</label></fieldset>
    <label for="c-${id}">Correction (optional)</label>`;
  const corr = el(a.labels ? "select" : "textarea", {id: `c-${id}`, name: "correction", rows: 2});
  if (a.labels) { corr.appendChild(el("option", {value: ""}, "(none)")); for (const l of a.labels) corr.appendChild(el("option", {}, l)); }
  const send = el("button", {type: "submit"}, "Send feedback"), status = el("span", {class: "muted", role: "status"});
  form.append(corr, send, document.createTextNode(" "), status);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const r = form.querySelector("input[name=rating]:checked");
    if (!r) { status.textContent = "choose a rating first"; return; }
    try {
      await api("/ui/api/feedback", {request_id: id, rating: Number(r.value), correction: corr.value || null});
      status.textContent = "stored"; send.disabled = true;
    } catch (e) { status.textContent = e.message; }
  });
  card.appendChild(form);
  return card;
}

function playground(form) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const models = [...form.querySelectorAll("input[name=models]:checked")].map((c) => c.value);
    const status = $("#p-status"), run = $("#run");
    if (!models.length) { status.textContent = "pick at least one adaptation"; return; }
    run.disabled = true; status.textContent = "running…"; busy(true, "running…");
    const t0 = performance.now();
    try {
      const res = await api(form.dataset.api, {input: $("#p-input").value, models,
                                               conversation: form.querySelector("input[name=kind]:checked").value === "conversation"});
      $("#answers").replaceChildren(...res.answers.map(answerCard));
      status.textContent = `done in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
    } catch (e) { status.textContent = e.message; }
    finally { run.disabled = false; busy(false); }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  if ($("#live")) watchJob($("#live"));
  if ($("#report-data")) report();
  if ($("#play")) playground($("#play"));
});
