"use strict";
// The admin panel: the cluster live (SSE), the desired state form, the prompt playground.

const $ = (id) => document.getElementById(id);
const turns = [];
let state = null;
let loadedAliases = "";  // the state form's aliases as loaded: sent only when edited
// The throughput chart: one sample a second on the page's own clock (snapshots also come on
// every change, so they cannot be the time axis); the newest sample is the current second,
// updated as snapshots arrive. It starts at 0: a fleet at rest is a flat line at 0.
const CHART_SECONDS = 120;
const CHART_WIDTH = 600;  // the SVG's viewBox
const CHART_HEIGHT = 80;
const chart = { samples: [0], taken: 1, latest: 0 };

// Every call of the panel's API: a 401 means the session ended (logged out, expired, or the
// admin key changed), so the page goes back to the sign-in page.
async function api(path, options) {
  const reply = await fetch(path, options);
  if (reply.status === 401) {
    location.assign("/");
    return new Promise(() => {});  // the page is leaving: the caller waits for nothing
  }
  return reply;
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function bar(busy, total) {
  const td = document.createElement("td");
  const outer = document.createElement("span");
  outer.className = "bar";
  const inner = document.createElement("span");
  inner.style.width = total ? `${(100 * busy) / total}%` : "0";
  outer.appendChild(inner);
  td.append(outer, ` ${busy}/${total}`);
  td.dataset.busy = String(busy);
  return td;
}

function showCluster(snapshot) {
  const rows = snapshot.agents.map((agent) => {
    const tr = document.createElement("tr");
    tr.dataset.agent = agent.name;
    const download = agent.download
      ? `${agent.download.done}${agent.download.total ? ` / ${agent.download.total}` : ""} B`
      : "";
    tr.append(
      cell(agent.name), cell(agent.address), cell(agent.pool), cell(agent.model),
      cell(agent.context ? `${agent.context} (${agent.context_source})` : ""),
      bar(agent.slots_busy, agent.slots_total), cell(String(agent.claimed)),
      cell(agent.ready ? "yes" : "no"),
      cell(`v${agent.applied_version}${agent.rolling ? " (updating)" : ""}`),
      cell(agent.issues.join("; ")), cell(download), cell(`${agent.last_seen_s} s ago`),
    );
    return tr;
  });
  $("agents").replaceChildren(...rows);
  showPools(snapshot.pools);
  $("buffered").textContent = String(snapshot.buffered);
  $("capacity").textContent = String(snapshot.buffer_capacity);
  $("throughput").textContent = String(snapshot.pieces_per_second);
  showRollout(snapshot.rollout);
  showThroughput(snapshot.pieces_per_second);
}

function showRollout(rollout) {
  const line = $("rollout");
  if (rollout.failure) {
    line.className = "error";
    line.textContent = `Rollout stopped: ${rollout.failure}`;
    return;
  }
  line.className = "";
  line.textContent = rollout.version
    ? `Rollout of v${rollout.version}: ${rollout.applied} of ${rollout.agents} agents applied, `
      + `${rollout.rolling} updating (at most ${rollout.maxUnavailable} at once)`
    : "";
}

// The latest rate the balancer reported: the current second's sample, until the next second.
function showThroughput(rate) {
  chart.latest = rate;
  chart.samples[chart.samples.length - 1] = rate;
  drawChart();
}

// Each second: a new sample, the latest rate (0 while nothing streams or the view is down).
function sampleThroughput() {
  chart.samples.push(chart.latest);
  if (chart.samples.length > CHART_SECONDS) chart.samples.shift();
  chart.taken += 1;
  drawChart();
}

// The samples as the line's points: spread across the chart until it is full, then scrolling;
// a single sample is a flat line across it.
function chartPoints(samples, top) {
  const shown = samples.length === 1 ? [samples[0], samples[0]] : samples;
  const step = CHART_WIDTH / (shown.length - 1);
  // 0 and the top stay 4 units clear of the edges, so the line never hides in the border.
  const y = (rate) => CHART_HEIGHT - 4 - (rate / top) * (CHART_HEIGHT - 8);
  return shown.map((rate, index) => `${(index * step).toFixed(1)},${y(rate).toFixed(1)}`);
}

// The line, the scale, and what the chart holds as data attributes (points plotted, samples
// taken since the page opened, the latest and the highest rate plotted).
function drawChart() {
  const { samples } = chart;
  const peak = Math.max(...samples);
  const top = Math.max(1, peak);
  const svg = $("chart");
  svg.querySelector("polyline").setAttribute("points", chartPoints(samples, top).join(" "));
  $("chart-top").textContent = String(top);
  Object.assign(svg.dataset, {
    points: String(samples.length),
    samples: String(chart.taken),
    latest: String(samples[samples.length - 1]),
    peak: String(peak),
  });
}

function watchCluster() {
  const source = new EventSource("/api/events");
  source.onopen = () => { $("connection").textContent = "live"; };
  source.onerror = () => {
    $("connection").textContent = "reconnecting…";
    chart.latest = 0;  // no rate is known until the view is back
    // The browser gives up on a refused stream: ask whether the session ended.
    if (source.readyState === EventSource.CLOSED) api("/api/session");
  };
  source.onmessage = (message) => showCluster(JSON.parse(message.data));
}

async function loadState() {
  const reply = await api(statePath());
  const versioned = await reply.json();
  if (!reply.ok) {
    $("state-message").className = "error";
    $("state-message").textContent = versioned.error.message;
    return;
  }
  state = versioned.state || {};
  loadedAliases = versioned.aliases.join(", ");
  $("state-aliases").value = loadedAliases;
  $("state-version").textContent = versioned.version ? `v${versioned.version}` : "(none set)";
  const model = state.model || {};
  const kind = ["packaged", "localPath", "huggingFace", "url"].find((k) => k in model)
    || "packaged";
  $("source-kind").value = kind;
  $("source-value").value = sourceText(kind, model);
  const mmproj = state.mmproj || {};
  const mmprojKind = ["localPath", "huggingFace", "url", "packaged"].find((k) => k in mmproj)
    || "";
  $("mmproj-kind").value = mmprojKind;
  $("mmproj-value").value = mmprojKind ? sourceText(mmprojKind, mmproj) : "";
  const defaults = state.defaults || {};
  for (const input of document.querySelectorAll("[data-sampling]")) {
    input.value = (defaults.sampling || {})[input.dataset.sampling] ?? "";
  }
  for (const input of document.querySelectorAll("[data-size]")) {
    input.value = defaults[input.dataset.size] ?? "";
  }
  const placement = state.placement || {};
  for (const input of document.querySelectorAll("[data-placement]")) {
    const value = placement[input.dataset.placement];
    input.value = value === undefined ? "" : (Array.isArray(value) ? value.join(",") : String(value));
  }
  $("template").value = state.chatTemplateOverride ?? "";
}

// The placement fields as protobuf JSON: empty ones are left out (each agent's flag applies).
function placementOf(inputs) {
  const placement = {};
  for (const input of inputs) {
    const { placement: key, kind } = input.dataset;
    if (input.value === "") continue;
    if (kind === "number") placement[key] = Number(input.value);
    else if (kind === "bool") placement[key] = input.value === "true";
    else if (kind === "list") placement[key] = input.value.split(",").map(Number);
    else placement[key] = input.value;
  }
  return placement;
}

// What the source field shows: Hugging Face as repo/file@revision, a URL with pip's
// #sha256= suffix when it is pinned.
function sourceText(kind, model) {
  const hf = model.huggingFace;
  if (kind === "huggingFace") return `${hf.repo}/${hf.file}${hf.revision ? `@${hf.revision}` : ""}`;
  if (kind === "url") return model.url.url + (model.url.sha256 ? `#sha256=${model.url.sha256}` : "");
  return model[kind] || "";
}

function modelSource(kind, value) {
  if (kind === "url") {
    const [url, sha256] = value.split("#sha256=");
    return { url: sha256 === undefined ? { url } : { url, sha256 } };
  }
  if (kind !== "huggingFace") return { [kind]: value };
  const [path, revision] = value.split("@");
  const slash = path.lastIndexOf("/");
  const source = { repo: path.slice(0, slash), file: path.slice(slash + 1) };
  if (revision) source.revision = revision;
  return { huggingFace: source };
}

async function applyState(event) {
  event.preventDefault();
  const next = { ...state, model: modelSource($("source-kind").value, $("source-value").value) };
  // What the form does not show (a seed, say) is kept as it was.
  const defaults = structuredClone(state.defaults || {});
  defaults.sampling = defaults.sampling || {};
  for (const input of document.querySelectorAll("[data-sampling]")) {
    const key = input.dataset.sampling;
    if (input.value === "") delete defaults.sampling[key];
    else defaults.sampling[key] = Number(input.value);
  }
  for (const input of document.querySelectorAll("[data-size]")) {
    const key = input.dataset.size;
    if (input.value === "") delete defaults[key]; else defaults[key] = Number(input.value);
  }
  next.defaults = defaults;
  next.placement = placementOf(document.querySelectorAll("[data-placement]"));
  const mmprojKind = $("mmproj-kind").value;
  if (mmprojKind) next.mmproj = modelSource(mmprojKind, $("mmproj-value").value);
  else delete next.mmproj;
  const template = $("template").value;
  if (template) next.chatTemplateOverride = template; else delete next.chatTemplateOverride;
  const aliases = $("state-aliases").value;
  const reply = await api(statePath(aliases === loadedAliases ? undefined : aliases), {
    method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(next),
  });
  const body = await reply.json();
  const message = $("state-message");
  if (reply.ok) {
    message.className = "ok";
    const pool = body.pool === "default" ? "" : ` in the pool ${body.pool}`;
    message.textContent = `Applied as v${body.version}${pool}.`;
    await loadState();
  } else {
    message.className = "error";
    message.textContent = body.error.message;
  }
}

function addTurn(role, text) {
  const turn = document.createElement("div");
  turn.className = `turn ${role}`;
  turn.textContent = text;
  $("conversation").appendChild(turn);
  return turn;
}

// An assistant turn: the reasoning (folded away once the reply's text begins), then the text.
function assistantTurn() {
  const turn = addTurn("assistant", "");
  const reasoning = document.createElement("details");
  reasoning.className = "reasoning";
  reasoning.open = true;
  reasoning.hidden = true;
  const label = document.createElement("summary");
  label.textContent = "Reasoning";
  const thought = document.createElement("div");
  reasoning.append(label, thought);
  const text = document.createElement("span");
  text.className = "text";
  turn.append(reasoning, text);
  return {
    turn,
    text,
    think(piece) { reasoning.hidden = false; thought.textContent += piece; },
    say(piece) { reasoning.open = false; text.textContent += piece; },
  };
}

// The files chosen in the image input, as {data (base64), mime_type, url (to show)}.
async function chosenImages() {
  const files = Array.from($("images").files);
  return Promise.all(files.map((file) => new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => {
      const url = reader.result;
      resolve({ data: url.slice(url.indexOf(",") + 1), mime_type: file.type, url });
    };
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  })));
}

async function send(event) {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  const summary = $("summary");
  summary.className = "";
  summary.textContent = "…";
  const images = await chosenImages();
  turns.push({
    role: "user",
    content: prompt,
    images: images.map(({ data, mime_type }) => ({ data, mime_type })),
  });
  const asked = addTurn("user", prompt);
  for (const image of images) {
    const picture = document.createElement("img");
    picture.className = "thumb";
    picture.alt = "an image sent with the question";
    picture.src = image.url;
    asked.appendChild(picture);
  }
  $("prompt").value = "";
  $("images").value = "";
  const reply = assistantTurn();
  const thinking = $("thinking").value;
  const response = await api("/api/generate", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      messages: turns,
      max_tokens: Number($("max-tokens").value),
      temperature: Number($("temperature").value),
      top_p: Number($("top-p").value),
      thinking: thinking === "" ? null : thinking === "on",
      model: $("model").value.trim(),
    }),
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    summary.className = "error";
    summary.textContent = body.error ? body.error.message : `Refused (${response.status}).`;
    turns.pop();  // the refused question does not stay in the conversation
    asked.remove();
    reply.turn.remove();
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    const events = pending.split("\n\n");
    pending = events.pop();
    for (const raw of events) {
      const data = JSON.parse(raw.replace(/^data: /, ""));
      if (data.reasoning) reply.think(data.reasoning);
      if (data.text) reply.say(data.text);
      if (data.error) {
        summary.className = "error";
        summary.textContent = `${data.error.code}: ${data.error.message}`;
        turns.pop();  // the refused question does not stay in the conversation
        asked.remove();
        reply.turn.remove();
        return;
      }
      if (data.summary) {
        const s = data.summary;
        summary.className = "ok";
        const thought = s.reasoning_tokens ? ` (${s.reasoning_tokens} reasoning)` : "";
        summary.textContent =
          `${s.agent} · ${s.model} · ${s.completion_tokens} tokens${thought} · first token ${s.time_to_first_token_ms} ms`;
      }
    }
  }
  turns.push({ role: "assistant", content: reply.text.textContent });
}

async function showSession() {
  const reply = await api("/api/session");
  $("logout").hidden = !(await reply.json()).admin_key;
}

async function logout() {
  await fetch("/api/logout", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: "{}",
  });
  location.assign("/");
}

$("state-form").addEventListener("submit", applyState);
$("state-pool").addEventListener("change", loadState);
$("logout").addEventListener("click", logout);
$("prompt-form").addEventListener("submit", send);
drawChart();
setInterval(sampleThroughput, 1000);
watchCluster();
loadState();
showSession();
