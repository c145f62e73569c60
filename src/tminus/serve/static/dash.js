// tminus dashboard: keeps a deploy's page live from its event stream and sends actions to
// the API with the session's CSRF token. No framework, no build step.
"use strict";

function csrf() {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.content : "";
}

function bodyOf(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) {
    if (k === "items") { out.items = [v]; continue; }
    if (k === "rollback" || k === "force") { out[k] = v === "true"; continue; }
    if (k === "vars") {
      out.vars = {};
      for (const pair of String(v).split(/\s+/).filter(Boolean)) {
        const i = pair.indexOf("=");
        if (i > 0) out.vars[pair.slice(0, i)] = pair.slice(i + 1);
      }
      continue;
    }
    if (v !== "") out[k] = v;
  }
  return out;
}

async function send(form, resultEl) {
  const button = form.querySelector("button[data-confirm]");
  if (button && !window.confirm(button.dataset.confirm)) return;
  resultEl.textContent = "sending…";
  resultEl.className = "result";
  let res, data;
  try {
    const body = bodyOf(form);
    let action = form.dataset.action;
    if (action.includes("{plan}")) {  // the start form: the plan chosen is in the path
      action = action.replace("{plan}", body.plan.split("/").map(encodeURIComponent).join("/"));
      delete body.plan;
    }
    res = await fetch(action, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body),
    });
    data = await res.json().catch(() => ({}));
  } catch (err) {
    resultEl.textContent = "the server did not answer: " + err;
    resultEl.className = "result bad";
    return;
  }
  const text = data.message || data.detail || res.statusText;
  resultEl.textContent = (res.ok ? "" : res.status + ": ") + (typeof text === "string" ? text : JSON.stringify(text));
  resultEl.className = "result " + (res.ok ? "good" : "bad");
  if (res.ok && data.deploy && form.id === "start-form") {
    window.location.href = "/deploys/" + encodeURIComponent(data.deploy);
  }
  if (res.ok && form.id === "register-form") {
    resultEl.textContent = "registered " + data.name + " (" + data.environment + ")";
    window.setTimeout(() => window.location.reload(), 600);
  }
}

function wireForms() {
  // one listener for every form, those swapped in later included (the actions are live)
  document.addEventListener("submit", (ev) => {
    const form = ev.target.closest("form[data-action]");
    if (!form) return;
    ev.preventDefault();
    const resultEl = document.getElementById(
      form.id === "start-form" || form.id === "register-form" ? "start-result" : "action-result");
    send(form, resultEl);
  });
}

function liveDeploy() {
  const root = document.getElementById("deploy");
  if (!root || !window.EventSource) return;
  const id = root.dataset.deploy;
  const log = document.getElementById("log");
  const panel = document.getElementById("panel");
  const forms = document.getElementById("action-forms");
  let pending = false;
  async function refresh() {
    pending = false;
    const res = await fetch("/deploys/" + encodeURIComponent(id) + "/panel", { credentials: "same-origin" });
    if (!res.ok) return;
    const doc = new DOMParser().parseFromString(await res.text(), "text/html");
    const nextPanel = doc.querySelector('[data-part="panel"]');
    const nextActions = doc.querySelector('[data-part="actions"]');
    if (nextPanel) panel.innerHTML = nextPanel.innerHTML;
    // the buttons change with the deploy (approved, paused, ended): swapped only when they
    // changed (a value typed into a form is not in its HTML: it is kept otherwise)
    if (nextActions && forms && nextActions.innerHTML !== forms.innerHTML) {
      forms.innerHTML = nextActions.innerHTML;
    }
  }
  const es = new EventSource("/api/v1/deploys/" + encodeURIComponent(id) + "/stream?after=" + root.dataset.last);
  es.addEventListener("error", () => { root.classList.add("offline"); });
  es.addEventListener("open", () => { root.classList.remove("offline"); });
  es.onmessage = (ev) => {
    const e = JSON.parse(ev.data);
    root.dataset.last = e.seq;
    const li = document.createElement("li");
    li.dataset.seq = e.seq;
    const t = document.createElement("time");
    t.textContent = String(e.ts).slice(0, 19).replace("T", " ");
    const b = document.createElement("b");
    b.textContent = e.type;
    li.append(t, " ", b, (e.key ? " [" + e.key + "]" : "") + " " + (e.message || ""));
    log.append(li);
    if (!pending) { pending = true; setTimeout(refresh, 150); }
  };
}

document.addEventListener("DOMContentLoaded", () => { wireForms(); liveDeploy(); });
