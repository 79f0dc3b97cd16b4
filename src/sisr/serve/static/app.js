// sisr serve: the page. Plain JavaScript, no build step, nothing fetched but this server's own API.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], items: [], current: null, token: null };

// --- the API ---------------------------------------------------------------------------------------------
function readToken() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("sisr-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);  // the token leaves the address bar
  }
  state.token = sessionStorage.getItem("sisr-token");
}

function headers() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    error.retryAfter = Number(response.headers.get("Retry-After") || 0);
    throw error;
  }
  return response;
}

// --- options ---------------------------------------------------------------------------------------------
function fill(select, values, chosen) {
  select.replaceChildren(...values.map((v) => new Option(String(v), String(v), false, String(v) === String(chosen))));
}

function modelChanged() {
  const model = state.models.find((m) => m.id === $("model").value);
  fill($("scale"), model ? model.scales : [], $("scale").value || (model && model.scales[0]));
}

function formatChanged() {
  $("quality").disabled = !["jpg", "webp", "same"].includes($("format").value);
}

async function loadModels() {
  try {
    const info = await (await api("/v1/models")).json();
    state.models = info.models;
    fill($("model"), info.models.map((m) => m.id), info.default);
    fill($("format"), info.formats, "png");
    modelChanged();
    formatChanged();
    const limits = info.limits;
    $("limits").textContent = `up to ${(limits.max_upload_bytes / 1048576).toFixed(0)} MiB and ` +
      `${(limits.max_pixels / 1e6).toFixed(1)} MP per image`;
    const health = await (await api("/v1/health")).json();
    $("server-line").textContent = `ready · ${health.models_loaded.join(", ") || "no model loaded yet"} · ` +
      `${limits.concurrency} at a time, ${limits.queue} more queued`;
  } catch (error) {
    $("server-line").textContent = "cannot reach the server: " + error.message;
  }
}

function formOptions() {
  const options = { model: $("model").value, scale: $("scale").value, format: $("format").value };
  if (!$("quality").disabled) options.quality = $("quality").value;
  if ($("self-ensemble").checked) options.self_ensemble = "true";
  if ($("tile-auto").checked) options.tile = "auto";
  return options;
}

// --- one image -------------------------------------------------------------------------------------------
function addFiles(files) {
  const options = formOptions();
  for (const file of files) {
    const row = $("item-template").content.firstElementChild.cloneNode(true);
    const item = { file, options, row, id: null, status: "sending", url: null, name: null,
                   inputUrl: URL.createObjectURL(file), abort: new AbortController() };
    row.querySelector(".name").textContent = file.name;
    row.querySelector(".name").title = file.name;
    row.querySelector(".cancel").onclick = () => cancel(item);
    row.querySelector(".view").onclick = () => show(item);
    $("items").append(row);
    state.items.push(item);
    start(item);
  }
  $("batch").hidden = false;
  summarise();
}

function setState(item, status, text, progress) {
  item.status = status;
  item.row.className = "item " + status + (state.current === item ? " current" : "");
  item.row.querySelector(".state").textContent = text;
  if (progress !== undefined) item.row.querySelector("progress").value = progress;
  item.row.querySelector(".cancel").hidden = ["done", "failed", "cancelled"].includes(status);
  summarise();
}

function fail(item, message) {
  setState(item, "failed", "failed");
  const line = item.row.querySelector(".error");
  line.textContent = message;
  line.hidden = false;
}

async function start(item) {
  const body = new FormData();
  body.append("image", item.file, item.file.name);
  for (const [key, value] of Object.entries(item.options)) body.append(key, value);
  setState(item, "sending", "uploading", 0);
  for (let attempt = 0; ; attempt++) {
    try {
      const job = await (await api("/v1/jobs", { method: "POST", body, signal: item.abort.signal })).json();
      item.id = job.id;
      return follow(item);
    } catch (error) {
      if (item.status === "cancelled") return;
      if (error.status === 429 && attempt < 600) {  // the queue is full: wait for a place
        setState(item, "waiting", "waiting for a place in the queue");
        await new Promise((r) => setTimeout(r, 1000 * Math.max(1, error.retryAfter)));
        continue;
      }
      return fail(item, error.message);
    }
  }
}

async function follow(item) {
  // server-sent events read through fetch, so the bearer token can go in a header
  try {
    const response = await api(`/v1/jobs/${item.id}/events`, { signal: item.abort.signal });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
        if (data && await update(item, JSON.parse(data))) return;
      }
    }
  } catch (error) {
    if (item.status !== "cancelled") fail(item, error.message);
  }
}

async function update(item, job) {
  if (item.status === "cancelled") return true;
  if (job.status === "queued" || job.status === "running") {
    setState(item, job.status, job.stage, job.progress);
    return false;
  }
  if (job.status === "failed") { fail(item, job.error); return true; }
  if (job.status === "cancelled") { setState(item, "cancelled", "cancelled"); return true; }
  const blob = await (await api(job.result, { signal: item.abort.signal })).blob();
  item.url = URL.createObjectURL(blob);
  item.name = job.download_name;
  const link = item.row.querySelector(".download");
  link.href = item.url;
  link.download = item.name;
  link.hidden = false;
  item.row.querySelector(".view").hidden = false;
  setState(item, "done", "done" + (job.notes.length ? " · " + job.notes.join("; ") : ""), 1);
  if (!state.current) show(item);
  return true;
}

async function cancel(item) {
  if (["done", "failed", "cancelled"].includes(item.status)) return;
  const id = item.id;
  setState(item, "cancelled", "cancelled");
  item.abort.abort();
  if (id) {
    try { await api(`/v1/jobs/${id}`, { method: "DELETE" }); } catch (error) { /* already gone */ }
  }
}

function summarise() {
  const count = (s) => state.items.filter((i) => i.status === s).length;
  const done = count("done"), failed = count("failed");
  const left = state.items.length - done - failed - count("cancelled");
  $("summary").textContent = `${done} done · ${failed} failed · ${left} to go`;
  $("download-all").disabled = done === 0;
}

async function downloadAll() {
  const ids = state.items.filter((i) => i.status === "done").map((i) => i.id);
  try {
    const blob = await (await api("/v1/archive?ids=" + ids.join(","))).blob();
    save(URL.createObjectURL(blob), "sisr-results.zip");
  } catch (error) {
    $("summary").textContent = "download failed: " + error.message;
  }
}

function save(url, name) {
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
}

// --- before/after viewer: both images in one transformed stage, so zoom and pan stay in step ---------------
const view = { zoom: 1, x: 0, y: 0, width: 0, height: 0 };

function show(item) {
  if (state.current) state.current.row.classList.remove("current");
  state.current = item;
  item.row.classList.add("current");
  $("viewer-section").hidden = false;
  $("viewer-title").textContent = item.file.name;
  $("after-tag").textContent = `sisr ${item.options.model} x${item.options.scale}`;
  const after = $("after");
  after.onload = () => {
    view.width = after.naturalWidth;
    view.height = after.naturalHeight;
    for (const img of [after, $("before")]) {
      img.style.width = view.width + "px";
      img.style.height = view.height + "px";
    }
    $("divider").style.height = view.height + "px";
    fit();
  };
  $("before").src = item.inputUrl;
  after.src = item.url;
}

function render() {
  $("stage").style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.zoom})`;
  const split = Number($("split").value);
  $("before").style.clipPath = `inset(0 ${100 - split}% 0 0)`;
  $("divider").style.left = (split / 100 * view.width) + "px";
}

function fit() {
  const box = $("viewer").getBoundingClientRect();
  view.zoom = Math.min(box.width / view.width, box.height / view.height) || 1;
  view.x = (box.width - view.width * view.zoom) / 2;
  view.y = (box.height - view.height * view.zoom) / 2;
  render();
}

function zoomAt(factor, px, py) {
  const zoom = Math.min(32, Math.max(0.05, view.zoom * factor));
  view.x = px - (px - view.x) * zoom / view.zoom;
  view.y = py - (py - view.y) * zoom / view.zoom;
  view.zoom = zoom;
  render();
}

function setUpViewer() {
  const box = $("viewer");
  box.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = box.getBoundingClientRect();
    zoomAt(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.clientX - r.left, e.clientY - r.top);
  }, { passive: false });
  let drag = null;
  box.addEventListener("pointerdown", (e) => {
    drag = { x: e.clientX - view.x, y: e.clientY - view.y };
    box.setPointerCapture(e.pointerId);
    box.classList.add("dragging");
  });
  box.addEventListener("pointermove", (e) => {
    if (!drag) return;
    view.x = e.clientX - drag.x;
    view.y = e.clientY - drag.y;
    render();
  });
  const stop = () => { drag = null; box.classList.remove("dragging"); };
  box.addEventListener("pointerup", stop);
  box.addEventListener("pointercancel", stop);
  $("split").addEventListener("input", render);
  $("zoom-fit").onclick = fit;
  $("zoom-1").onclick = () => {
    const r = box.getBoundingClientRect();
    zoomAt(1 / view.zoom, r.width / 2, r.height / 2);
  };
  $("smooth").onchange = () => $("before").classList.toggle("smooth", $("smooth").checked);
}

// --- start -----------------------------------------------------------------------------------------------
function setUp() {
  readToken();
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addFiles([...e.dataTransfer.files]);
  });
  $("files").onchange = (e) => { addFiles([...e.target.files]); e.target.value = ""; };
  $("model").onchange = modelChanged;
  $("format").onchange = formatChanged;
  $("download-all").onclick = downloadAll;
  $("cancel-all").onclick = () => state.items.forEach(cancel);
  $("clear").onclick = () => {
    state.items = state.items.filter((i) => {
      const finished = ["done", "failed", "cancelled"].includes(i.status) && i !== state.current;
      if (finished) i.row.remove();
      return !finished;
    });
    summarise();
  };
  setUpViewer();
  loadModels();
}

setUp();
