// softap-sim dashboard: one card per device, live from the control API's /v1/stream.
// Plain JavaScript, no build step; every URL is same-origin. Device data (SSIDs above all)
// is hostile input: it only ever reaches the page through textContent, never as HTML.
"use strict";

const COLOURS = {
  off: "#333", white: "#f5f5f5", "dark blue": "#1a3dff", green: "#00c853",
  cyan: "#00e5ff", red: "#ff1744",
};
const cards = new Map(); // device id -> {el, data}
const $ = (sel, root = document) => root.querySelector(sel);

function kb(bytes) { return (bytes / 1024).toFixed(1) + " KB"; }

// Control.snapshot() (one device) and the fleet summary name things differently.
function normalise(d) {
  return {
    id: d.device_id || d.id,
    ssid: d.ssid,
    state: d.state,
    led: d.led,
    firmware: d.firmware,
    claimed: d.claimed,
    claimCodeSet: d.claim_code_set,
    networks: (d.credentials || d.networks || []).map((n) => ({ ssid: n.ssid, security: n.security })),
    heap: d.heap ? { free: d.heap.free_bytes, gate: d.heap.gate_bytes } : null,
  };
}

function ledPattern(led) {
  if (led.colour === "red" && led.pattern === "blinking") return "sos";
  return led.pattern.replace(/ /g, "-");
}

function drawLed(el, led) {
  const dot = $(".led", el);
  dot.style.setProperty("--led", COLOURS[led.colour] || COLOURS.off);
  dot.dataset.pattern = ledPattern(led);
  dot.dataset.colour = led.colour;
  dot.setAttribute("aria-label", "LED " + led.text);
  $(".led-text", el).textContent = led.text;
}

function render(card) {
  const { el, data } = card;
  el.dataset.id = data.id;
  el.dataset.state = data.state;
  $(".ssid", el).textContent = data.ssid;
  $(".id", el).textContent = data.id;
  $(".state", el).textContent = data.state;
  $(".firmware", el).textContent = data.firmware;
  let claim = data.claimed ? "yes" : "no";
  if (!data.claimed && data.claimCodeSet) claim += " (claim code set)";
  $(".claim", el).textContent = claim;
  const list = $(".networks", el);
  list.replaceChildren(...data.networks.map((n) => {
    const li = document.createElement("li");
    li.textContent = `${n.ssid} (${n.security})`;
    return li;
  }));
  if (!data.networks.length) list.textContent = "none";
  if (data.heap) {
    const { free, gate } = data.heap;
    const gauge = $(".gauge", el);
    const scale = Math.max(2 * gate, free, 1);
    $(".fill", gauge).style.width = (100 * free / scale).toFixed(1) + "%";
    $(".gate", gauge).style.left = (100 * gate / scale).toFixed(1) + "%";
    gauge.dataset.below = String(free < gate);
    $(".heap-text", el).textContent = `${kb(free)} free, gate ${kb(gate)}`;
  }
  drawLed(el, data.led);
  filterOne(card);
}

function newCard(id) {
  const el = $("#card").content.firstElementChild.cloneNode(true);
  for (const button of el.querySelectorAll("button")) {
    button.addEventListener("click", () => act(id, button));
  }
  $("#cards").append(el);
  const card = { el, data: null };
  cards.set(id, card);
  return card;
}

function onSnapshot(raw) {
  const data = normalise(raw);
  const card = cards.get(data.id) || newCard(data.id);
  card.data = data;
  render(card);
  count();
}

function onState(msg) {
  const card = cards.get(msg.device_id);
  if (!card || !card.data) return;
  card.data.state = msg.state;
  card.data.led = msg.led;
  render(card);
}

function onEvent(msg) {
  const card = cards.get(msg.device_id);
  if (!card) return;
  const arrow = msg.direction === "in" ? "←" : "→";
  $(".event", card.el).textContent = `${arrow} ${msg.name} ${msg.data || ""}`.trim();
}

async function act(id, button) {
  const card = cards.get(id);
  const error = $(".error", card.el);
  button.disabled = true;
  try {
    const resp = await fetch(`/v1/devices/${encodeURIComponent(id)}${button.dataset.path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: button.dataset.body,
    });
    const body = await resp.json();
    if (!resp.ok) throw new Error(body.message || resp.statusText);
    error.hidden = true;
    if (body.device_id) onSnapshot(body);
  } catch (err) {
    error.textContent = String(err.message || err);
    error.hidden = false;
  } finally {
    button.disabled = false;
  }
}

function matches(data, query) {
  return !query || data.id.toLowerCase().includes(query) || data.ssid.toLowerCase().includes(query);
}

function filterOne(card) {
  card.el.hidden = !matches(card.data, $("#search").value.trim().toLowerCase());
}

function count() {
  const shown = [...cards.values()].filter((c) => !c.el.hidden).length;
  $("#count").textContent = `${shown} of ${cards.size} devices`;
}

function connect() {
  const link = $("#link");
  const source = new EventSource("/v1/stream");
  const json = (handler) => (e) => handler(JSON.parse(e.data));
  source.addEventListener("open", () => { link.dataset.up = "true"; link.textContent = "live"; });
  source.addEventListener("error", () => { link.dataset.up = "false"; link.textContent = "reconnecting…"; });
  source.addEventListener("snapshot", json(onSnapshot));
  source.addEventListener("state", json(onState));
  source.addEventListener("event", json(onEvent));
  // fell behind: the server ended the stream; EventSource reconnects with fresh snapshots
  source.addEventListener("dropped", () => { link.textContent = "resyncing…"; });
}

document.addEventListener("DOMContentLoaded", () => {
  $("#search").addEventListener("input", () => {
    for (const card of cards.values()) if (card.data) filterOne(card);
    count();
  });
  connect();
});
