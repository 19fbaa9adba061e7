// The search page: browse the collection (or a cluster), search with an indexed image, an
// upload, a drop or a paste, or a part of one; view a result at full size. What is on screen
// lives in the address (?id=, ?box=, ?cluster=, ?page=, ?k=), so reload, back/forward and a
// copied link bring it back; an upload cannot be put there, and the page says so.
// Talks only to this server's JSON API; no libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const K_CHOICES = [1, 5, 10, 20, 30, 50, 100];
const PAGE = 48; // images per page when browsing (at most the server's max_k)

const state = {
  health: null,
  query: null, // {kind: "upload", file, url, box} or {kind: "item", id, box}
  shown: [], // the entries of the grid, in order: the viewer moves through them
  viewing: -1, // the entry open in the viewer
  seq: 0, // number of the newest request; older answers are dropped
  clusterList: null,
};

// ------------------------------------------------------------------------------ helpers
async function api(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new Error(`cannot reach the server (${err.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    let detail = body && body.detail !== undefined ? body.detail : response.statusText;
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    throw new Error(`${detail} (HTTP ${response.status})`);
  }
  return body;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setStatus(text) {
  $("status").textContent = text;
}

function formatBytes(n) {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} bytes`;
}

function formatDistance(d) {
  // Below 1e-9 is float rounding of an identical embedding (the same image): show 0.
  if (Math.abs(d) < 1e-9) return "0";
  return Math.abs(d) >= 1000 || Math.abs(d) < 0.01 ? d.toExponential(2) : d.toPrecision(3);
}

function formatMs(ms) {
  return ms < 10 ? ms.toFixed(1) : ms.toFixed(0);
}

function labelled() {
  return Boolean(state.health && state.health.labelled);
}

// The class of an entry, only for an index built with labels (folder names are not classes).
function className(entry) {
  if (!labelled()) return null;
  if (entry.class_name) return entry.class_name;
  return entry.label >= 0 ? `class ${entry.label}` : "unlabelled";
}

function currentK() {
  return Number($("k").value) || (state.health ? state.health.default_k : 10);
}

function pageSize() {
  return state.health ? Math.min(PAGE, state.health.max_k) : PAGE;
}

function itemPath(id) {
  return id.split("/").map(encodeURIComponent).join("/");
}

function boxText(box) {
  return box ? box.join(",") : "";
}

function sizeText(img) {
  return img.naturalWidth ? `${img.naturalWidth}×${img.naturalHeight} px` : "";
}

function clusterText(entry) {
  if (entry.cluster === null || entry.cluster === undefined) return null;
  const p = entry.cluster_probability;
  return p === null || p === undefined ? `${entry.cluster}` : `${entry.cluster} (p ${p.toFixed(2)})`;
}

function setMeta(rows) {
  const meta = $("query-meta");
  meta.replaceChildren();
  for (const [name, value, id] of rows) {
    if (value === null || value === undefined) continue;
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    if (id) dd.id = id;
    meta.append(dt, dd);
  }
}

// ------------------------------------------------------------------------------ the address
function params() {
  return new URLSearchParams(window.location.search);
}

function pageNumber(p) {
  const n = Number.parseInt(p.get("page") || "1", 10);
  return Number.isFinite(n) && n >= 1 ? n : 1;
}

// Puts a new state in the address (a new history entry) and shows it.
function navigate(values) {
  const p = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) {
    if (value !== null && value !== undefined && value !== "") p.set(key, String(value));
  }
  const k = currentK();
  if (state.health && k !== state.health.default_k) p.set("k", String(k));
  const query = p.toString();
  const url = query ? `?${query}` : window.location.pathname;
  const same = query ? url === window.location.search : !window.location.search;
  if (!same) window.history.pushState(null, "", url);
  return showAddress();
}

// Shows what the address says: a search by id, a cluster, a page of the collection.
function showAddress() {
  const p = params();
  const k = p.get("k");
  if (k && [...$("k").options].some((o) => o.value === k)) $("k").value = k;
  const id = p.get("id");
  if (id !== null) return searchItem(id, p.get("box"));
  if (p.has("cluster")) return showCluster(p.get("cluster"), pageNumber(p));
  if (p.has("upload")) {
    const q = state.query;
    if (q && q.kind === "upload") return runUpload(q);
    showError("");
    browse(pageNumber(p));
    setStatus("");
    showError(
      "The uploaded image is not kept in the page's address: drop, paste or choose it again.",
    );
    return undefined;
  }
  return browse(pageNumber(p));
}

// ------------------------------------------------------------------------------ the query view
function showQuery(src, alt) {
  const view = $("query-view");
  const img = $("query-image");
  if (!src) {
    view.hidden = true;
    img.removeAttribute("src");
    return;
  }
  img.classList.remove("small");
  img.alt = alt;
  img.onload = () => {
    img.classList.toggle("small", img.naturalWidth < 128);
    const size = $("query-size");
    if (size && !size.textContent) size.textContent = sizeText(img);
    drawBox(state.query ? state.query.box : null);
  };
  // A file the browser cannot show (TIFF): no picture, so no region to draw.
  img.onerror = () => {
    view.hidden = true;
  };
  if (img.getAttribute("src") !== src) img.src = src;
  else img.onload();
  view.hidden = false;
}

function drawBox(box) {
  const img = $("query-image");
  const el = $("region-box");
  $("region").value = boxText(box);
  if (!box || !img.naturalWidth) {
    el.hidden = true;
    return;
  }
  const [x, y, w, h] = box;
  el.style.left = `${(100 * x) / img.naturalWidth}%`;
  el.style.top = `${(100 * y) / img.naturalHeight}%`;
  el.style.width = `${(100 * w) / img.naturalWidth}%`;
  el.style.height = `${(100 * h) / img.naturalHeight}%`;
  el.hidden = false;
}

function parseBox(text) {
  const t = text.trim();
  if (!t) return null;
  const parts = t.split(",").map((s) => s.trim());
  if (parts.length !== 4 || !parts.every((s) => /^-?\d+$/.test(s))) {
    throw new Error(`region: expected x,y,width,height as four whole numbers, got “${t}”`);
  }
  return parts.map(Number);
}

// Search with the part in the region field (or the whole image when it is empty).
function searchRegion(text) {
  const q = state.query;
  if (!q) return undefined;
  let box;
  try {
    box = parseBox(text);
  } catch (err) {
    showError(err.message);
    return undefined;
  }
  if (q.kind === "upload") {
    q.box = box;
    return runUpload(q);
  }
  return navigate({ id: q.id, box: boxText(box) });
}

function setUpRegionDrawing() {
  const area = $("region-area");
  const img = $("query-image");
  const el = $("region-box");
  let start = null;
  const point = (e) => {
    const r = img.getBoundingClientRect();
    return {
      x: Math.min(Math.max(e.clientX - r.left, 0), r.width),
      y: Math.min(Math.max(e.clientY - r.top, 0), r.height),
      r,
    };
  };
  area.addEventListener("pointerdown", (e) => {
    if (!img.naturalWidth || e.button !== 0) return;
    e.preventDefault();
    start = point(e);
    area.setPointerCapture(e.pointerId);
  });
  area.addEventListener("pointermove", (e) => {
    if (!start) return;
    const p = point(e);
    el.style.left = `${Math.min(start.x, p.x)}px`;
    el.style.top = `${Math.min(start.y, p.y)}px`;
    el.style.width = `${Math.abs(p.x - start.x)}px`;
    el.style.height = `${Math.abs(p.y - start.y)}px`;
    el.hidden = false;
  });
  area.addEventListener("pointerup", (e) => {
    if (!start) return;
    const p = point(e);
    const s = start;
    start = null;
    const scale = img.naturalWidth / p.r.width;
    const x0 = Math.round(Math.min(s.x, p.x) * scale);
    const y0 = Math.round(Math.min(s.y, p.y) * scale);
    const x1 = Math.min(Math.round(Math.max(s.x, p.x) * scale), img.naturalWidth);
    const y1 = Math.min(Math.round(Math.max(s.y, p.y) * scale), img.naturalHeight);
    if (x1 - x0 < 2 || y1 - y0 < 2) {
      drawBox(state.query ? state.query.box : null); // a click, not a box
      return;
    }
    searchRegion(`${x0},${y0},${x1 - x0},${y1 - y0}`);
  });
}

// ------------------------------------------------------------------------------ cards
// One result: the image and a caption (file name, size, distance, class); a click searches
// with it, "View" opens it at full size.
function makeCard(entry, at, rank, detail, tooltip) {
  const li = document.createElement("li");
  const card = document.createElement("button");
  card.type = "button";
  card.className = "card";
  card.title = `${entry.id}\n${tooltip}\nclick to search with this image`;
  card.addEventListener("click", () => navigate({ id: entry.id }));

  const img = document.createElement("img");
  img.alt = entry.id;
  img.decoding = "async";
  const size = document.createElement("span");
  size.className = "size";
  img.addEventListener("load", () => {
    img.classList.toggle("small", img.naturalWidth < 128);
    size.textContent = sizeText(img);
  });
  img.src = entry.image_url;

  const caption = document.createElement("span");
  caption.className = "caption";
  const name = document.createElement("span");
  name.className = "name";
  if (rank) {
    const r = document.createElement("span");
    r.className = "rank";
    r.textContent = rank;
    name.append(r);
  }
  name.append(entry.id);
  const line = document.createElement("span");
  line.className = "distance";
  line.append(detail);
  const cls = className(entry);
  if (cls) {
    const c = document.createElement("span");
    c.className = "class";
    c.textContent = cls;
    caption.append(name, c, line, size);
  } else {
    caption.append(name, line, size);
  }
  card.append(img, caption);

  const view = document.createElement("button");
  view.type = "button";
  view.className = "view plain";
  view.textContent = "View";
  view.setAttribute("aria-label", `View ${entry.id} at full size`);
  view.addEventListener("click", () => openViewer(at));
  li.append(card, view);
  return li;
}

function showGrid(entries, makeOne) {
  state.shown = entries;
  $("grid").replaceChildren(...entries.map(makeOne));
  $("empty").hidden = entries.length > 0;
  // How many grids were shown: lets a test (or a script) wait for the next one.
  document.body.dataset.shown = String(Number(document.body.dataset.shown || 0) + 1);
}

function clearResults() {
  state.shown = [];
  $("grid").replaceChildren();
  $("results-title").textContent = "Nearest images";
  $("empty").hidden = false;
  $("pager").hidden = true;
  $("clusters").hidden = true;
  showClusterButton(null);
}

function showClusterButton(entry) {
  // "More from this cluster" for a query the run's cluster head has placed in a group.
  const button = $("cluster-more");
  const has = entry && entry.cluster !== null && entry.cluster !== undefined;
  button.hidden = !has;
  button.onclick = has ? () => navigate({ cluster: entry.cluster }) : null;
}

// ------------------------------------------------------------------------------ search
function render(result) {
  const q = result.query;
  const box = q.box || null;
  if (q.kind === "item") {
    state.query = { kind: "item", id: q.id, box };
    setMeta([
      ["file", q.id],
      ["size", "", "query-size"],
      ["class", className(q)],
      ["cluster", clusterText(q)],
      ["region", box ? boxText(box) : null],
    ]);
    showQuery(q.image_url, `query: ${q.id}`);
  } else {
    setMeta([
      ["file", q.filename || "pasted image"],
      ["size", `${q.width}×${q.height} px, ${q.format}, ${formatBytes(q.bytes)}`],
      ["cluster", clusterText(q)],
      ["region", box ? boxText(box) : null],
    ]);
    drawBox(box);
  }
  $("upload-note").hidden = q.kind !== "upload";
  showClusterButton(q);
  $("clusters").hidden = true;
  $("pager").hidden = true;

  const queryLabel = q.kind === "item" && labelled() ? q.label : -1;
  showGrid(result.neighbors, (n, i) => {
    const cluster = n.cluster === null || n.cluster === undefined ? "" : `\ncluster ${n.cluster}`;
    const li = makeCard(n, i, `#${n.rank} `, `d = ${formatDistance(n.distance)}`,
      `squared distance ${n.distance}${cluster}`);
    const card = li.firstChild;
    if (queryLabel >= 0 && n.label >= 0) card.classList.add(n.label === queryLabel ? "same" : "other");
    return li;
  });

  const title = $("results-title");
  const part = box ? ` to the region ${boxText(box)}` : "";
  title.textContent = `${result.neighbors.length} nearest images${part}`;
  if (queryLabel >= 0) {
    const same = result.neighbors.filter((n) => n.label === queryLabel).length;
    const legend = document.createElement("div");
    legend.className = "legend muted";
    legend.innerHTML =
      '<span class="swatch same"></span>same class <span class="swatch other"></span>other class';
    legend.prepend(`${same} of ${result.neighbors.length} share the query's class · `);
    title.append(document.createElement("br"), legend);
  }
  setStatus(`searched in ${formatMs(result.milliseconds)} ms on the server`);
}

async function run(request) {
  const seq = ++state.seq;
  document.body.classList.add("busy");
  $("random").disabled = true;
  showClusterButton(null); // the cluster of the previous query until this one's answer
  setStatus("searching…");
  showError("");
  try {
    const result = await request();
    if (seq === state.seq) render(result);
  } catch (err) {
    if (seq === state.seq) {
      // Results of an earlier query would sit beside this one's name: clear them.
      clearResults();
      showError(err.message);
      setStatus("");
    }
  } finally {
    if (seq === state.seq) {
      document.body.classList.remove("busy");
      $("random").disabled = false;
    }
  }
}

function searchFile(file) {
  if (!file) return undefined;
  const limit = state.health ? state.health.max_upload_bytes : 0;
  if (limit && file.size > limit) {
    state.seq++; // an answer still on its way belongs to an older query
    clearResults();
    showError(
      `${file.name}: ${formatBytes(file.size)} is more than this server accepts ` +
        `(${formatBytes(limit)} per image)`,
    );
    return undefined;
  }
  if (state.query && state.query.kind === "upload" && state.query.url) {
    URL.revokeObjectURL(state.query.url);
  }
  const q = { kind: "upload", file, url: URL.createObjectURL(file), box: null };
  state.query = q;
  const p = new URLSearchParams({ upload: "1" });
  const k = currentK();
  if (state.health && k !== state.health.default_k) p.set("k", String(k));
  window.history.pushState(null, "", `?${p}`);
  return runUpload(q);
}

function runUpload(q) {
  state.query = q;
  showQuery(q.url, `uploaded query: ${q.file.name || "pasted image"}`);
  $("upload-note").hidden = false;
  setMeta([
    ["file", q.file.name || "pasted image"],
    ["size", formatBytes(q.file.size)],
  ]);
  return run(() => {
    const form = new FormData();
    form.append("image", q.file, q.file.name || "pasted-image");
    form.append("k", String(currentK()));
    if (q.box) form.append("box", boxText(q.box));
    return api("search", { method: "POST", body: form });
  });
}

function searchItem(id, box) {
  state.query = { kind: "item", id, box: null };
  $("upload-note").hidden = true;
  window.scrollTo({ top: 0, behavior: "smooth" });
  const part = box ? `&box=${encodeURIComponent(box)}` : "";
  return run(async () => {
    try {
      return await api(`items/${itemPath(id)}/neighbors?k=${currentK()}${part}`);
    } catch (err) {
      showQuery(null);
      setMeta([]);
      throw err;
    }
  });
}

async function searchRandom() {
  const seq = ++state.seq;
  try {
    const result = await api(`random?k=${currentK()}`);
    if (seq === state.seq) navigate({ id: result.query.id });
  } catch (err) {
    if (seq === state.seq) showError(err.message);
  }
}

// ------------------------------------------------------------------------------ browse
function showPager(page, total, go) {
  const pages = Math.max(1, Math.ceil(total / pageSize()));
  $("pager").hidden = pages <= 1 && page <= 1;
  $("prev").disabled = page <= 1;
  $("next").disabled = page >= pages;
  $("prev").onclick = () => go(Math.min(page - 1, pages));
  $("next").onclick = () => go(page + 1);
  $("page-info").textContent = `page ${page} of ${pages}`;
}

function rangeText(offset, count, total) {
  if (!count) return `no images on this page (there are ${total.toLocaleString()})`;
  return `images ${(offset + 1).toLocaleString()}–${(offset + count).toLocaleString()} of ` +
    `${total.toLocaleString()}`;
}

function leaveQuery() {
  state.query = null;
  showQuery(null);
  setMeta([]);
  $("upload-note").hidden = true;
  showClusterButton(null);
}

async function browse(page) {
  const seq = ++state.seq;
  leaveQuery();
  showError("");
  setStatus("loading the collection…");
  const offset = (page - 1) * pageSize();
  try {
    const body = await api(`items?offset=${offset}&limit=${pageSize()}`);
    if (seq !== state.seq) return;
    showGrid(body.items, (item, i) => makeCard(item, i, "", "", "click to search with it"));
    $("results-title").textContent =
      `The collection: ${rangeText(offset, body.items.length, body.total)}`;
    $("empty").hidden = true;
    showPager(page, body.total, (n) => navigate({ page: n > 1 ? n : null }));
    showClusterList(null);
    setStatus("");
  } catch (err) {
    if (seq === state.seq) {
      showError(err.message);
      setStatus("");
    }
  }
}

async function showClusterList(current) {
  const nav = $("clusters");
  if (!state.health || !state.health.clusters) {
    nav.hidden = true;
    return;
  }
  try {
    state.clusterList = state.clusterList || (await api("clusters"));
  } catch {
    nav.hidden = true;
    return;
  }
  const label = document.createElement("span");
  label.className = "muted";
  label.textContent = "Clusters:";
  const links = state.clusterList.clusters.map((c) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "plain chip";
    b.textContent = `${c.cluster} (${c.size})`;
    b.setAttribute("aria-label", `cluster ${c.cluster}, ${c.size} images`);
    if (c.cluster === current) b.setAttribute("aria-current", "true");
    b.addEventListener("click", () => navigate({ cluster: c.cluster }));
    return b;
  });
  nav.replaceChildren(label, ...links);
  nav.hidden = false;
}

async function showCluster(cluster, page) {
  const seq = ++state.seq;
  leaveQuery();
  showError("");
  setStatus(`loading cluster ${cluster}…`);
  $("grid").replaceChildren();
  $("pager").hidden = true;
  const offset = (page - 1) * pageSize();
  try {
    const body = await api(
      `clusters/${encodeURIComponent(cluster)}?offset=${offset}&limit=${pageSize()}`,
    );
    if (seq !== state.seq) return;
    showGrid(body.items, (item, i) =>
      makeCard(item, i, `#${body.offset + i + 1} `, `p = ${item.cluster_probability.toFixed(2)}`,
        `cluster ${item.cluster}, probability ${item.cluster_probability}`),
    );
    $("results-title").textContent =
      `Cluster ${body.cluster}: ${rangeText(offset, body.items.length, body.size)}, ` +
      "most probable first";
    $("empty").hidden = true;
    showPager(page, body.size, (n) => navigate({ cluster, page: n > 1 ? n : null }));
    showClusterList(body.cluster);
    setStatus("");
  } catch (err) {
    if (seq === state.seq) {
      clearResults();
      showError(err.message);
      setStatus("");
    }
  }
}

// ------------------------------------------------------------------------------ viewer
function openViewer(at) {
  const dialog = $("viewer");
  if (!dialog.open) dialog.showModal();
  showInViewer(at);
}

function showInViewer(at) {
  const entry = state.shown[at];
  if (!entry) return;
  state.viewing = at;
  const img = $("viewer-image");
  const meta = $("viewer-meta");
  const parts = [];
  if (entry.distance !== undefined) parts.push(`distance ${formatDistance(entry.distance)}`);
  const cls = className(entry);
  if (cls) parts.push(`class ${cls}`);
  parts.push(`${at + 1} of ${state.shown.length}`);
  const describe = () => {
    meta.textContent = [sizeText(img), ...parts].filter(Boolean).join(" · ");
  };
  img.onload = describe;
  img.alt = entry.id;
  img.src = entry.image_url;
  describe();
  $("viewer-title").textContent = entry.id;
  $("viewer-open").href = entry.image_url;
  $("viewer-prev").disabled = at <= 0;
  $("viewer-next").disabled = at >= state.shown.length - 1;
}

function setUpViewer() {
  const dialog = $("viewer");
  $("viewer-close").addEventListener("click", () => dialog.close());
  $("viewer-prev").addEventListener("click", () => showInViewer(state.viewing - 1));
  $("viewer-next").addEventListener("click", () => showInViewer(state.viewing + 1));
  $("viewer-search").addEventListener("click", () => {
    const entry = state.shown[state.viewing];
    dialog.close();
    if (entry) navigate({ id: entry.id });
  });
  dialog.addEventListener("keydown", (e) => {
    if (e.key === "ArrowLeft") showInViewer(state.viewing - 1);
    else if (e.key === "ArrowRight") showInViewer(state.viewing + 1);
    else return;
    e.preventDefault();
  });
  // A click on the backdrop (outside the picture's box) closes it too.
  dialog.addEventListener("click", (e) => {
    if (e.target === dialog) dialog.close();
  });
}

// ------------------------------------------------------------------------------ start
async function loadHealth() {
  try {
    const h = await api("health");
    state.health = h;
    const classes = h.labelled && h.class_names.length ? `, ${h.class_names.length} classes` : "";
    const clusters = h.clusters ? `, ${h.clusters} clusters` : "";
    $("index-info").textContent =
      `${h.items.toLocaleString()} images${classes}${clusters} · ${h.model} model, ` +
      `${h.image_size}×${h.image_size} input, ${h.index_type} index`;
    const select = $("k");
    const choices = [...new Set([...K_CHOICES.filter((k) => k <= h.max_k), h.default_k])];
    choices.sort((a, b) => a - b);
    select.replaceChildren(
      ...choices.map((k) => {
        const option = document.createElement("option");
        option.value = String(k);
        option.textContent = String(k);
        option.selected = k === h.default_k;
        return option;
      }),
    );
    return true;
  } catch (err) {
    $("index-info").textContent = "index unavailable";
    showError(err.message);
    return false;
  }
}

function repeatQuery() {
  const q = state.query;
  if (q && q.kind === "upload") return runUpload(q);
  const p = params();
  const values = Object.fromEntries([...p.entries()].filter(([key]) => key !== "k"));
  return navigate(values);
}

function setUp() {
  const input = $("file");
  input.addEventListener("change", () => {
    if (input.files && input.files[0]) searchFile(input.files[0]);
    input.value = ""; // choosing the same file again searches again
  });

  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  // Anywhere on the page: a dropped file is a query, never a navigation away.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) searchFile(file);
  });
  window.addEventListener("paste", (e) => {
    const file = e.clipboardData && e.clipboardData.files[0];
    if (file) searchFile(file);
  });

  $("random").addEventListener("click", searchRandom);
  $("browse").addEventListener("click", () => navigate({}));
  $("k").addEventListener("change", repeatQuery);
  $("region-search").addEventListener("click", () => searchRegion($("region").value));
  $("region").addEventListener("keydown", (e) => {
    if (e.key === "Enter") searchRegion($("region").value);
  });
  $("region-clear").addEventListener("click", () => searchRegion(""));
  setUpRegionDrawing();
  setUpViewer();
  window.addEventListener("popstate", showAddress);
  loadHealth().then((ok) => {
    if (ok) showAddress();
  });
}

document.addEventListener("DOMContentLoaded", setUp);
