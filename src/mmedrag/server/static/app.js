// mmedrag web page: pick or upload an image, ask, show the answer beside its evidence.
// Plain DOM, no framework, no external resources (works offline). Text from the server is
// always inserted with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, fileName: "", galleryOffset: 0, galleryLimit: 24, info: null };
const STAGE_ORDER = ["route", "retrieve", "rerank", "select", "generate_without_retrieval", "generate"];
const TASK_LABELS = {
  open_vqa: "Open question", closed_vqa: "Yes / no question", report: "Write a report",
  mcq: "Multiple choice", mcq_voc: "Multiple choice (vocabulary)", longform: "Long answer",
};

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function apiKey() {
  return $("api-key").value.trim() || sessionStorage.getItem("mmedrag-key") || "";
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function showError(message) {
  const banner = $("banner");
  banner.textContent = message;
  banner.hidden = !message;
}

function setStatus(text, busy) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("busy", !!busy);
  $("ask-button").disabled = !!busy;
  $("search-button").disabled = !!busy;
}

// Images come through fetch so an API key can be sent; object URLs are cached per URL.
const blobCache = new Map();
async function loadImage(img, url) {
  if (!url) return;
  try {
    if (!blobCache.has(url)) {
      const blob = await (await api(url)).blob();
      blobCache.set(url, URL.createObjectURL(blob));
    }
    img.src = blobCache.get(url);
  } catch (err) {
    img.alt = "image unavailable";
  }
}

// -- index summary, tasks, gallery ---------------------------------------------------------
async function loadInfo() {
  const health = await (await fetch("/healthz")).json();
  $("key-box").hidden = !health.auth;
  if (health.auth && !apiKey()) {
    $("index-summary").textContent = "enter the API key to start";
    return;
  }
  const info = await (await api("/v1/info")).json();
  state.info = info;
  const domains = Object.entries(info.domains || {}).map(([d, n]) => `${d || "–"} ${n}`).join(" · ");
  $("index-summary").textContent =
    `${info.count} records (${info.images} images) · ${domains} · generator: ${info.generator}`;
  const task = $("task");
  task.replaceChildren();
  for (const name of info.tasks || ["open_vqa"]) {
    const option = el("option", null, TASK_LABELS[name] || name);
    option.value = name;
    task.appendChild(option);
  }
  const domainSelect = $("gallery-domain");
  domainSelect.replaceChildren(Object.assign(el("option", null, "all"), { value: "" }));
  for (const d of Object.keys(info.domains || {})) {
    domainSelect.appendChild(Object.assign(el("option", null, d || "–"), { value: d }));
  }
  await loadGallery(true);
}

async function loadGallery(reset) {
  if (reset) { state.galleryOffset = 0; $("gallery").replaceChildren(); }
  const domain = $("gallery-domain").value;
  const params = new URLSearchParams({ limit: state.galleryLimit, offset: state.galleryOffset });
  if (domain) params.set("domain", domain);
  const data = await (await api(`/v1/gallery?${params}`)).json();
  for (const item of data.items) {
    const button = el("button", "thumb");
    button.type = "button";
    button.title = `${item.id} (${item.domain})\n${item.text}`;
    button.dataset.id = item.id;
    const img = el("img");
    img.alt = item.id;
    loadImage(img, `${item.image_url}?size=128`);
    button.append(img, el("span", "thumb-domain", item.domain || ""));
    button.addEventListener("click", () => pickFromIndex(item, button));
    $("gallery").appendChild(button);
  }
  state.galleryOffset += data.items.length;
  $("gallery-count").textContent = `(${data.total})`;
  $("gallery-more").hidden = data.items.length < state.galleryLimit;
}

async function pickFromIndex(item, button) {
  try {
    const blob = await (await api(item.image_url)).blob();
    setImage(blob, `${item.id}.png`, `from the index: ${item.id} (${item.domain})`);
    document.querySelectorAll(".thumb.selected").forEach((b) => b.classList.remove("selected"));
    button.classList.add("selected");
  } catch (err) { showError(err.message); }
}

// -- the query image -----------------------------------------------------------------------
function setImage(blob, name, label) {
  state.file = blob;
  state.fileName = name;
  const preview = $("preview");
  if (preview.dataset.url) URL.revokeObjectURL(preview.dataset.url);
  preview.dataset.url = URL.createObjectURL(blob);
  preview.src = preview.dataset.url;
  preview.hidden = false;
  $("drop-hint").hidden = true;
  $("image-meta").hidden = false;
  $("image-name").textContent = label || name;
}

function clearImage() {
  state.file = null;
  $("preview").hidden = true;
  $("drop-hint").hidden = false;
  $("image-meta").hidden = true;
  $("image-input").value = "";
  document.querySelectorAll(".thumb.selected").forEach((b) => b.classList.remove("selected"));
}

function wireImageInput() {
  const zone = $("dropzone");
  $("browse").addEventListener("click", () => $("image-input").click());
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter") $("image-input").click(); });
  $("image-input").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) setImage(file, file.name, `uploaded: ${file.name}`);
  });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) setImage(file, file.name, `uploaded: ${file.name}`);
  });
  $("clear-image").addEventListener("click", clearImage);
}

// -- asking --------------------------------------------------------------------------------
function parseOptions(text) {
  const options = {};
  for (const line of text.split("\n")) {
    const match = line.match(/^\s*([A-Ja-j])\s*[:.)]\s*(.+)$/);
    if (match) options[match[1].toUpperCase()] = match[2].trim();
  }
  return options;
}

async function ask(event) {
  event.preventDefault();
  showError("");
  const question = $("question").value.trim();
  const task = $("task").value || "open_vqa";
  if (!question && task !== "report") { showError("Type a question first."); return; }
  const form = new FormData();
  form.append("question", question);
  form.append("task", task);
  form.append("no_rag", $("use-rag").checked ? "false" : "true");
  if (task.startsWith("mcq")) form.append("options", JSON.stringify(parseOptions($("options").value)));
  if (state.file) form.append("image", state.file, state.fileName);
  setStatus("Retrieving evidence and generating…", true);
  const started = performance.now();
  try {
    const answer = await (await api("/v1/answer", { method: "POST", body: form })).json();
    renderAnswer(answer);
    setStatus(`Answered in ${((performance.now() - started) / 1000).toFixed(2)} s`, false);
  } catch (err) {
    showError(err.message);
    setStatus("", false);
  }
}

async function searchOnly() {
  showError("");
  const form = new FormData();
  const text = $("question").value.trim();
  if (text) form.append("text", text);
  if (state.file) form.append("image", state.file, state.fileName);
  form.append("k", "8");
  const searchTitle = (result) => {
    const route = result.route && result.route.domain
      ? `; routed to ${result.route.field} ${result.route.domain}` : "";
    const who = (result.retrievers || []).join(" + ") || result.mode;
    return `Search results (${who}${route})`;
  };
  setStatus("Searching…", true);
  try {
    const result = await (await api("/v1/search", { method: "POST", body: form })).json();
    $("answer").hidden = true;
    $("empty").hidden = true;
    renderEvidence(result.hits.map((h, i) => Object.assign({ number: i + 1, cited: false }, h)),
                   searchTitle(result));
    setStatus(`${result.hits.length} hits in ${(result.seconds * 1000).toFixed(0)} ms`, false);
  } catch (err) {
    showError(err.message);
    setStatus("", false);
  }
}

// -- rendering -----------------------------------------------------------------------------
function badge(text, kind) { return el("span", `badge ${kind || ""}`, text); }

function renderAnswer(answer) {
  $("empty").hidden = true;
  $("answer").hidden = false;
  $("answer-text").textContent = answer.text || "(empty answer)";
  const badges = $("answer-badges");
  badges.replaceChildren();
  const squash = (t) => String(t || "").toLowerCase().replace(/[^a-z0-9]+/g, "");
  if (answer.parsed && squash(answer.parsed) !== squash(answer.text.replace(/\[\d+\]/g, ""))) {
    const parsed = answer.parsed.length > 60 ? `${answer.parsed.slice(0, 57)}…` : answer.parsed;
    badges.appendChild(badge(`parsed: ${parsed}`, "strong"));
  }
  if (answer.yes_probability !== null && answer.yes_probability !== undefined) {
    badges.appendChild(badge(`P(yes) ${answer.yes_probability.toFixed(2)}`));
  }
  badges.appendChild(answer.image_seen ? badge("image seen by the model", "good")
    : badge("image not seen by the model", "warn"));
  badges.appendChild(badge(answer.used_rag ? "retrieval on" : "retrieval off"));
  if (answer.domain) badges.appendChild(badge(`domain ${answer.domain}`));
  badges.appendChild(badge(`${answer.tokens_in} tokens in · ${answer.tokens_out} out`));

  const sel = answer.selection || {};
  $("k-value").textContent = sel.k !== undefined ? `k = ${sel.k}` : "k = 0";
  $("k-of").textContent = sel.candidates ? `of ${sel.candidates} candidates` : "";
  $("k-reason").textContent = sel.reason || (answer.used_rag ? "no evidence selected" : "retrieval was off");
  renderTiming(answer.seconds || {});
  const trace = $("trace");
  trace.replaceChildren(...(answer.trace || []).map((line) => el("li", null, line)));
  renderEvidence(answer.evidence || [], `Evidence (${(answer.evidence || []).length})`, true);
}

function renderTiming(seconds) {
  const stages = Object.keys(seconds).filter((s) => s !== "total")
    .sort((a, b) => (STAGE_ORDER.indexOf(a) + 99) % 99 - (STAGE_ORDER.indexOf(b) + 99) % 99);
  const longest = Math.max(1e-6, ...stages.map((s) => seconds[s]));
  const box = $("timing");
  box.replaceChildren();
  for (const stage of stages) {
    const row = el("div", "t-row");
    const bar = el("div", "t-bar");
    bar.style.width = `${Math.max(1, (100 * seconds[stage]) / longest)}%`;
    const track = el("div", "t-track");
    track.appendChild(bar);
    row.append(el("span", "t-name", stage.replace(/_/g, " ")), track,
               el("span", "t-val", formatSeconds(seconds[stage])));
    box.appendChild(row);
  }
  if (seconds.total !== undefined) {
    box.appendChild(el("div", "t-total", `total ${formatSeconds(seconds.total)}`));
  }
}

function formatSeconds(s) { return s >= 1 ? `${s.toFixed(2)} s` : `${(s * 1000).toFixed(1)} ms`; }

function renderEvidence(items, title, withCitations = false) {
  $("evidence-title").hidden = false;
  $("evidence-title").textContent = title;
  const box = $("evidence");
  box.replaceChildren();
  if (!items.length) box.appendChild(el("p", "muted", "No evidence was used."));
  for (const item of items) {
    const card = el("article", `card${item.cited ? " cited" : ""}`);
    const figure = el("div", "card-image");
    if (item.image_url) {
      const img = el("img");
      img.alt = `evidence ${item.number}: ${item.id}`;
      loadImage(img, `${item.image_url}?size=256`);
      figure.appendChild(img);
    } else {
      figure.appendChild(el("span", "no-image", "text"));
    }
    const body = el("div", "card-body");
    const head = el("div", "card-head");
    head.append(el("span", "num", `[${item.number}]`));
    if (item.cited) head.appendChild(badge("cited", "good"));
    else if (withCitations) head.appendChild(badge("not cited", "muted-badge"));
    head.append(badge(item.domain || "–"), el("span", "score", `score ${Number(item.score).toFixed(3)}`));
    const caption = el("p", "caption", item.title ? `${item.title} — ${item.text}` : item.text);
    caption.title = "click to expand";
    caption.addEventListener("click", () => caption.classList.toggle("open"));
    body.append(head, caption, el("p", "card-id", `${item.id} · ${item.retriever || ""}`));
    card.append(figure, body);
    box.appendChild(card);
  }
}

// -- start ---------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  wireImageInput();
  $("ask-form").addEventListener("submit", ask);
  $("search-button").addEventListener("click", searchOnly);
  $("gallery-more").addEventListener("click", () => loadGallery(false).catch((e) => showError(e.message)));
  $("gallery-domain").addEventListener("change", () => loadGallery(true).catch((e) => showError(e.message)));
  $("task").addEventListener("change", () => { $("options-box").hidden = !$("task").value.startsWith("mcq"); });
  $("api-key").value = sessionStorage.getItem("mmedrag-key") || "";
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("mmedrag-key", $("api-key").value.trim());
    blobCache.clear();
    loadInfo().catch((e) => showError(e.message));
  });
  loadInfo().catch((e) => showError(`Could not reach the server: ${e.message}`));
});
