// The search page: upload, drop or paste an image (or pick a result, or a random one) and show
// its nearest indexed images. Talks only to this server's JSON API; no libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const K_CHOICES = [1, 5, 10, 20, 30, 50, 100];

const state = {
  health: null,
  query: null, // {kind: "upload", file, url} or {kind: "item", id}
  seq: 0, // number of the newest request; older answers are dropped
};

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

function className(entry) {
  if (entry.class_name) return entry.class_name;
  return entry.label >= 0 ? `class ${entry.label}` : "unlabelled";
}

function currentK() {
  return Number($("k").value) || (state.health ? state.health.default_k : 10);
}

function setMeta(rows) {
  const meta = $("query-meta");
  meta.replaceChildren();
  for (const [name, value] of rows) {
    if (value === null || value === undefined || value === "") continue;
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    meta.append(dt, dd);
  }
}

function showQueryImage(src) {
  const img = $("query-image");
  const hint = $("drop-hint");
  img.classList.remove("small");
  img.onload = () => img.classList.toggle("small", img.naturalWidth < 128);
  // A file the browser cannot show (TIFF, or not an image): back to the hint.
  img.onerror = () => {
    img.hidden = true;
    hint.hidden = false;
  };
  img.src = src;
  img.hidden = false;
  hint.hidden = true;
}

function clearResults() {
  $("grid").replaceChildren();
  $("results-title").textContent = "Nearest images";
  $("empty").hidden = false;
  $("more").hidden = true;
  showClusterButton(null);
}

function formatMs(ms) {
  return ms < 10 ? ms.toFixed(1) : ms.toFixed(0);
}

function itemPath(id) {
  return id.split("/").map(encodeURIComponent).join("/");
}

function clusterText(entry) {
  if (entry.cluster === null || entry.cluster === undefined) return null;
  const p = entry.cluster_probability;
  return p === null || p === undefined ? `${entry.cluster}` : `${entry.cluster} (p ${p.toFixed(2)})`;
}

function showClusterButton(entry) {
  // "More from this cluster" for a query the run's cluster head has placed in a group.
  const button = $("cluster-more");
  const has = entry && entry.cluster !== null && entry.cluster !== undefined && entry.cluster_url;
  button.hidden = !has;
  button.onclick = has ? () => showCluster(entry.cluster_url, entry.cluster) : null;
}

// One result card: the image, a caption (name on the left, `detail` on the right); a click
// searches with the image.
function makeCard(entry, prefix, detail, tooltip) {
  const li = document.createElement("li");
  const card = document.createElement("button");
  card.type = "button";
  card.className = "card";
  card.title = `${entry.id}\n${tooltip}\nclick to search with this image`;
  card.addEventListener("click", () => searchItem(entry.id));

  const img = document.createElement("img");
  img.alt = `${className(entry)} (${entry.id})`;
  img.decoding = "async";
  img.addEventListener("load", () => img.classList.toggle("small", img.naturalWidth < 128));
  img.src = entry.image_url;

  const caption = document.createElement("span");
  caption.className = "caption";
  const name = document.createElement("span");
  name.className = "name";
  const rank = document.createElement("span");
  rank.className = "rank";
  rank.textContent = prefix;
  name.append(rank, className(entry));
  const right = document.createElement("span");
  right.className = "distance";
  right.textContent = detail;
  caption.append(name, right);

  card.append(img, caption);
  li.append(card);
  return li;
}

function render(result) {
  const q = result.query;
  const queryLabel = q.kind === "item" ? q.label : -1;
  if (q.kind === "item") {
    showQueryImage(q.image_url);
    setMeta([
      ["id", q.id],
      ["class", className(q)],
      ["cluster", clusterText(q)],
    ]);
  } else {
    setMeta([
      ["file", q.filename],
      ["size", `${q.width}×${q.height} ${q.format}, ${formatBytes(q.bytes)}`],
      ["cluster", clusterText(q)],
    ]);
  }
  showClusterButton(q);

  const grid = $("grid");
  const cards = result.neighbors.map((n) => {
    const cluster = n.cluster === null || n.cluster === undefined ? "" : `\ncluster ${n.cluster}`;
    const li = makeCard(n, `#${n.rank} `, `d = ${formatDistance(n.distance)}`,
      `squared distance ${n.distance}${cluster}`);
    const card = li.firstChild;
    if (queryLabel >= 0 && n.label >= 0) card.classList.add(n.label === queryLabel ? "same" : "other");
    return li;
  });
  grid.replaceChildren(...cards);
  $("more").hidden = true;
  $("empty").hidden = cards.length > 0;

  const title = $("results-title");
  title.textContent = `${result.neighbors.length} nearest images`;
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

// A cluster's images, most probable first; "Show more" appends the next page.
function showCluster(url, cluster) {
  state.seq++;
  const seq = state.seq;
  showError("");
  setStatus(`loading cluster ${cluster}…`);
  $("grid").replaceChildren();
  $("more").hidden = true;
  return loadClusterPage(url, seq);
}

async function loadClusterPage(url, seq) {
  const more = $("more");
  more.disabled = true;
  try {
    const page = await api(url);
    if (seq !== state.seq) return;
    const cards = page.items.map((item, i) =>
      makeCard(item, `#${page.offset + i + 1} `, `p = ${item.cluster_probability.toFixed(2)}`,
        `cluster ${item.cluster}, probability ${item.cluster_probability}`),
    );
    $("grid").append(...cards);
    const shown = page.offset + page.items.length;
    $("results-title").textContent =
      `Cluster ${page.cluster}: ${shown.toLocaleString()} of ${page.size.toLocaleString()} ` +
      "images, most probable first";
    $("empty").hidden = shown > 0;
    more.hidden = !page.next_url;
    more.onclick = page.next_url ? () => loadClusterPage(page.next_url, seq) : null;
    setStatus("");
  } catch (err) {
    if (seq === state.seq) {
      showError(err.message);
      setStatus("");
    }
  } finally {
    more.disabled = false;
  }
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
  if (!file) return;
  const limit = state.health ? state.health.max_upload_bytes : 0;
  if (limit && file.size > limit) {
    state.seq++; // an answer still on its way belongs to an older query
    clearResults();
    showError(
      `${file.name}: ${formatBytes(file.size)} is more than this server accepts ` +
        `(${formatBytes(limit)} per image)`,
    );
    return;
  }
  if (state.query && state.query.kind === "upload" && state.query.url) {
    URL.revokeObjectURL(state.query.url);
  }
  const url = URL.createObjectURL(file);
  state.query = { kind: "upload", file, url };
  showQueryImage(url);
  setMeta([
    ["file", file.name || "pasted image"],
    ["size", formatBytes(file.size)],
  ]);
  return run(() => {
    const form = new FormData();
    form.append("image", file, file.name || "pasted-image");
    form.append("k", String(currentK()));
    return api("search", { method: "POST", body: form });
  });
}

function searchItem(id) {
  state.query = { kind: "item", id };
  window.scrollTo({ top: 0, behavior: "smooth" });
  return run(() => api(`items/${itemPath(id)}/neighbors?k=${currentK()}`));
}

function searchRandom() {
  return run(async () => {
    const result = await api(`random?k=${currentK()}`);
    state.query = { kind: "item", id: result.query.id };
    return result;
  });
}

function repeatQuery() {
  const q = state.query;
  if (!q) return;
  if (q.kind === "upload") searchFile(q.file);
  else searchItem(q.id);
}

async function loadHealth() {
  try {
    const h = await api("health");
    state.health = h;
    const classes = h.class_names.length ? `, ${h.class_names.length} classes` : "";
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
  } catch (err) {
    $("index-info").textContent = "index unavailable";
    showError(err.message);
  }
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
  $("k").addEventListener("change", repeatQuery);
  loadHealth();
}

document.addEventListener("DOMContentLoaded", setUp);
