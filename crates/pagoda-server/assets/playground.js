"use strict";
// The playground talks to this server's own OpenAI-compatible API: nothing
// is loaded from anywhere else.
const $ = (id) => document.getElementById(id);
const history = [];
let model = null;
let controller = null;

// The key lives as long as the tab (sessionStorage), not on the disk.
$("api-key").value = sessionStorage.getItem("pagoda-api-key") || "";
$("api-key").addEventListener("change", () => sessionStorage.setItem("pagoda-api-key", $("api-key").value));

function headers() {
  const h = { "content-type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.authorization = "Bearer " + key;
  return h;
}

async function connect() {
  try {
    const health = await fetch("/health");
    if (health.status !== 200) {
      $("status").textContent = "loading the model…";
      setTimeout(connect, 1000);
      return;
    }
    const r = await fetch("/v1/models", { headers: headers() });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
    model = body.data[0].id;
    $("status").textContent = "model: " + model;
  } catch (e) {
    $("status").textContent = "not connected: " + e.message;
    setTimeout(connect, 2000);
  }
}

function bubble(kind, text) {
  const div = document.createElement("div");
  div.className = "message " + kind;
  div.textContent = text || "";
  $("log").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function assistantView() {
  const div = bubble("assistant", "");
  const details = document.createElement("details");
  details.className = "reasoning";
  details.hidden = true;
  details.open = true;
  const summary = document.createElement("summary");
  summary.textContent = "Reasoning";
  const thinking = document.createElement("div");
  thinking.className = "text";
  details.append(summary, thinking);
  const content = document.createElement("div");
  content.className = "content";
  const stats = document.createElement("div");
  stats.className = "stats";
  div.append(details, content, stats);
  return { div, details, thinking, content, stats };
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function send() {
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  history.push({ role: "user", content: text });
  bubble("user", text);
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  const view = assistantView();
  controller = new AbortController();
  setBusy(true);
  const started = performance.now();
  let first = null, chunks = 0, usage = null, finish = null;
  let reasoning = "", content = "";
  const showStats = (note) => {
    const now = performance.now();
    const tokens = usage ? usage.completion_tokens : chunks;
    const rate = first !== null && now > first ? (tokens - 1) / ((now - first) / 1000) : 0;
    const parts = [tokens + " tokens"];
    if (first !== null) parts.push(Math.max(rate, 0).toFixed(1) + " tok/s",
                                   "first token " + Math.round(first - started) + " ms");
    if (note) parts.push(note);
    view.stats.textContent = parts.join(" · ");
  };
  try {
    const body = {
      model: model || undefined, messages, stream: true, stream_options: { include_usage: true },
      temperature: Number($("temperature").value), max_tokens: Number($("max-tokens").value),
    };
    const res = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!res.ok) {
      const e = await res.json().catch(() => ({}));
      throw new Error(e.error ? e.error.message : res.status + " " + res.statusText);
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          const choice = chunk.choices && chunk.choices[0];
          if (!choice) continue;
          const delta = choice.delta || {};
          if (delta.reasoning_content) {
            reasoning += delta.reasoning_content;
            view.details.hidden = false;
            view.thinking.textContent = reasoning;
          }
          if (delta.content) {
            content += delta.content;
            view.content.textContent = content;
            // The answer has begun: fold the thinking away.
            if (reasoning) view.details.open = false;
          }
          if (delta.reasoning_content || delta.content) {
            if (first === null) first = performance.now();
            chunks += 1;
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      }
      showStats();
      view.div.scrollIntoView({ block: "end" });
    }
    showStats(finish === "length" ? "stopped at max tokens" : "done");
    view.div.dataset.state = "done";
  } catch (e) {
    if (e.name === "AbortError") {
      showStats("stopped");
      view.div.dataset.state = "stopped";
    } else {
      view.div.classList.add("error");
      view.content.textContent = (content ? content + "\n\n" : "") + "Error: " + e.message;
      view.div.dataset.state = "error";
    }
  } finally {
    controller = null;
    setBusy(false);
    const turn = { role: "assistant", content };
    if (reasoning) turn.reasoning_content = reasoning;
    history.push(turn);
  }
}

$("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); }
});
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });
$("new-chat").addEventListener("click", () => {
  if (controller) controller.abort();
  history.length = 0;
  $("log").textContent = "";
});
connect();
