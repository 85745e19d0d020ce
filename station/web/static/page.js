// The station's status page: plain JavaScript, shipped with the station (it may be offline).
// The live status comes as Server-Sent Events from /api/events, read with fetch() rather than
// EventSource, which cannot send the Authorization header the token travels in. The token is
// kept in sessionStorage: for this tab only, gone when it closes.
"use strict";

const TOKEN_KEY = "station-token";
const RETRY_MS = 2000;
const RECORDS_EVERY_MS = 5000;
let current = null;          // the last status document
let recordsKey = "";         // what, when it changes, makes the records worth reading again
let recordsAt = 0;
let certificate = null;      // {id, html, json}

const $ = (id) => document.getElementById(id);
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

function headers() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined || child === "") continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function say(text) { $("message").textContent = text || ""; }

async function errorOf(response) {
  try { return (await response.json()).error || response.statusText; } catch { return response.statusText; }
}

// -- the live feed -----------------------------------------------------------------------

async function follow() {
  for (;;) {
    try {
      const response = await fetch("/api/events", { headers: headers(), cache: "no-store" });
      if (!response.ok) {
        const why = await errorOf(response);
        if (response.status === 403) { sessionStorage.removeItem(TOKEN_KEY); showToken(why); }
        throw new Error(why);
      }
      link(true);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (data) show(JSON.parse(data));
        }
      }
    } catch (error) {
      console.warn("live feed:", error);
    }
    link(false);
    await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
  }
}

function link(up) {
  $("link").textContent = up ? "live" : "station not answering: trying again…";
  $("link").className = "link " + (up ? "up" : "down");
}

// -- drawing -----------------------------------------------------------------------------

function show(status) {
  current = status;
  $("station").textContent = status.station;
  $("clock").textContent = new Date(status.time).toLocaleTimeString();
  $("faults").replaceChildren(...status.faults.map((f) => el("li", {}, f)));
  $("status-line").textContent = status.status || "";
  for (const name of ["restored", "failed", "locked", "retried"]) $(name).textContent = status.counters[name];
  $("port-flags").replaceChildren(...status.port_flags.map((f) =>
    el("li", {}, `CHECK PORT ${f.slot}: ${f.troubles} of ${f.attempts} bad (cable, hub port)`)));
  $("ports").replaceChildren(...status.ports.map(portCard));
  $("ipsw").replaceChildren(...status.ipsw.map((i) => el("tr", {},
    el("td", {}, i.build || "–"), el("td", {}, i.version || "–"), el("td", {}, (i.models || []).join(", ")),
    el("td", {}, size(i.size)), el("td", {}, i.state), el("td", {}, i.signed === null ? "–" : i.signed ? "yes" : "no"))));
  if (!status.ipsw.length) $("ipsw").append(el("tr", {}, el("td", { colspan: 6 }, "no IPSW cached")));
  const key = status.ports.map((p) => p.state).join() + JSON.stringify(status.counters) + status.sensitive_shown;
  if (key !== recordsKey || Date.now() - recordsAt > RECORDS_EVERY_MS * 6) { recordsKey = key; loadRecords(); }
}

function portCard(port) {
  const classes = ["port", port.state];
  if (port.needs_person) classes.push("person");
  const facts = el("dl", {});
  const fact = (name, value) => { if (value !== null && value !== undefined && value !== "") facts.append(el("dt", {}, name), el("dd", {}, value)); };
  fact("model", port.model);
  fact("serial", port.serial);
  fact("ECID", port.ecid);
  fact("IMEI", port.imei);
  fact("iOS", port.ios || (port.mode && port.mode !== "normal" ? port.mode.toUpperCase() : null));
  fact("lock", port.lock === "unchecked" ? null : port.lock_text.replace(/^lock: /, "") + (port.lock_method ? ` [${port.lock_method}]` : ""));
  fact("phase", port.state === "restoring" ? (port.phase || "").replaceAll("_", " ") : null);
  fact("time left", port.eta);
  fact("attempts", port.max_attempts ? `${port.attempts} of ${port.max_attempts}` : null);
  fact("job", port.model ? port.job : null);
  const card = el("div", { class: classes.join(" "), "data-slot": port.slot, "data-state": port.state },
    el("div", { class: "head" }, el("span", { class: "slot" }, `Slot ${port.slot}`),
      el("span", { class: "label" }, port.label)),
    el("div", { class: "title" }, port.retry ? `${port.title} · ${port.retry}` : port.title),
    facts);
  if (port.state === "restoring" || port.state === "verifying") {
    card.append(el("div", { class: "bar", title: `${port.percent}%` }, el("span", { style: `width:${port.percent}%` })),
      el("div", { class: "percent" }, `${port.percent.toFixed(0)}%`));
  }
  if (port.operator_reason) card.append(el("div", { class: "why" }, port.operator_reason));
  if (port.held && port.state === "needs_confirm") card.append(el("div", { class: "why" }, "held: hold OK on the station to confirm"));
  if (token() && port.actions.length) {
    card.append(el("div", { class: "actions" }, ...port.actions.map((action) =>
      el("button", { type: "button", "data-action": action, onclick: () => act(port.slot, action) }, action))));
  }
  return card;
}

function size(bytes) {
  if (bytes >= 1e9) return (bytes / 1e9).toFixed(1) + " GB";
  return (bytes / 1e6).toFixed(1) + " MB";
}

// -- records and certificates -------------------------------------------------------------

async function loadRecords() {
  recordsAt = Date.now();
  const response = await fetch("/api/records?limit=30", { headers: headers(), cache: "no-store" });
  if (!response.ok) { say(await errorOf(response)); return; }
  const rows = await response.json();
  $("records").replaceChildren(...rows.map((r) => el("tr", { "data-record": r.id },
    el("td", {}, r.id), el("td", {}, r.started_at ? new Date(r.started_at).toLocaleString() : "–"),
    el("td", {}, r.slot), el("td", {}, r.model || "–"), el("td", {}, r.serial || (r.ecid ? "ECID " + r.ecid : "–")),
    el("td", {}, r.job || "restore"), el("td", {}, r.outcome || `open: ${r.state}`), el("td", {}, r.lock_result || "–"),
    el("td", {}, r.certificate ? (token() ? el("button", { type: "button", class: "show-certificate", onclick: () => openCertificate(r.id) }, "show")
      : "token needed") : "–"))));
}

async function openCertificate(id) {
  const [page, json] = await Promise.all([fetch(`/certificates/${id}`, { headers: headers() }),
                                          fetch(`/api/certificates/${id}`, { headers: headers() })]);
  if (!page.ok || !json.ok) { say(await errorOf(page.ok ? json : page)); return; }
  certificate = { id, html: await page.text(), json: await json.json() };
  $("certificate-id").textContent = `#${id}`;
  $("certificate-frame").srcdoc = certificate.html;
  $("certificate").hidden = false;
  $("certificate").scrollIntoView();
}

function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el("a", { href: url, download: name });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// -- actions -------------------------------------------------------------------------------

async function act(slot, action) {
  const response = await fetch(`/api/ports/${slot}/${action}`, { method: "POST", headers: headers() });
  say(response.ok ? "" : `slot ${slot}: ${await errorOf(response)}`);
}

// -- the token -----------------------------------------------------------------------------

function showToken(note) {
  $("token-state").textContent = note || (token() ? "token in use (this tab only)" : "no token: serials and certificates hidden");
}

function restart() { location.reload(); }  // the live feed starts again with the new header

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    restart();
  });
  $("forget").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); restart(); });
  $("print").addEventListener("click", () => $("certificate-frame").contentWindow.print());
  $("open-tab").addEventListener("click", () =>
    window.open(URL.createObjectURL(new Blob([certificate.html], { type: "text/html" })), "_blank"));
  $("save-json").addEventListener("click", () =>
    download(`certificate-${certificate.id}.json`, JSON.stringify(certificate.json, null, 2), "application/json"));
  $("close-certificate").addEventListener("click", () => { $("certificate").hidden = true; });
  showToken();
  follow();
});
