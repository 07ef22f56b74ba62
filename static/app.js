// Small enhancements for the dashboard; every page works without them.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Chart: a tooltip and cursor that follow the pointer or keyboard focus.
  for (const fig of document.querySelectorAll("figure.chart")) {
    const svg = fig.querySelector("svg");
    const tip = fig.querySelector(".tooltip");
    const cursor = fig.querySelector(".cursor");
    if (!svg || !tip || !cursor) continue;
    const hits = Array.from(fig.querySelectorAll(".hit"));
    const show = (g) => {
      for (const h of hits) h.classList.toggle("on", h === g);
      // Buckets without a value (a rate without visits) have no circle.
      const x = g.dataset.x;
      cursor.setAttribute("x1", x);
      cursor.setAttribute("x2", x);
      cursor.classList.add("on");
      const prev = g.dataset.previous ? ` (before: ${g.dataset.previous})` : "";
      tip.textContent = g.dataset.title + prev;
      tip.hidden = false;
      const box = svg.getBoundingClientRect();
      const scale = box.width / svg.viewBox.baseVal.width;
      tip.style.left = `${Math.min(Math.max(x * scale, 80), box.width - 80)}px`;
    };
    const hide = () => {
      tip.hidden = true;
      cursor.classList.remove("on");
      for (const h of hits) h.classList.remove("on");
    };
    for (const g of hits) {
      g.addEventListener("pointerenter", () => show(g));
      g.querySelector("title")?.remove(); // the tooltip replaces the native one
    }
    svg.addEventListener("pointerleave", hide);
  }
  // Live numbers over Server-Sent Events; the browser reconnects by itself.
  // A page left for another is closed (browsers keep left pages alive in
  // their back/forward cache, and over HTTP/1.1 six open streams would stall
  // every further request to the server), and reopened on return.
  const root = document.querySelector("[data-live]");
  if (root && window.EventSource) {
    const status = document.getElementById("live-status");
    let source = null;
    const open = () => {
      source = new EventSource(root.dataset.live);
      source.onmessage = (message) => showLive(root, JSON.parse(message.data), status);
      source.onerror = (event) => {
        if (status) status.textContent = "Reconnecting…";
        // Refused (too many live views open): the browser gives up, so try
        // again later, as the answer's Retry-After asks.
        if (event.target === source && source.readyState === EventSource.CLOSED) {
          source = null;
          setTimeout(() => {
            if (!source) open();
          }, 30000);
        }
      };
    };
    open();
    window.addEventListener("pagehide", () => {
      if (source) source.close();
      source = null;
    });
    window.addEventListener("pageshow", (event) => {
      if (event.persisted && !source) open();
    });
  }

  // Settings: copy the tracking snippet.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const source = document.getElementById(button.dataset.copy);
    if (!source || !navigator.clipboard) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      await navigator.clipboard.writeText(source.textContent);
      button.textContent = "Copied";
    });
  }
});

// Puts one live snapshot on the page.
function showLive(root, live, status) {
  const count = document.getElementById("current-visitors");
  if (count) count.textContent = live.visitors_text;
  for (const key of ["pages", "sources", "countries"]) {
    const list = root.querySelector(`ol[data-list="${key}"]`);
    if (list) fillRows(list, live[key]);
  }
  const bars = root.querySelectorAll(".minutes .minute");
  if (bars.length === live.pageviews_per_minute.length) {
    const max = Math.max(1, ...live.pageviews_per_minute);
    live.pageviews_per_minute.forEach((v, i) => {
      const h = (110 * v) / max;
      bars[i].setAttribute("height", h.toFixed(1));
      bars[i].setAttribute("y", (115 - h).toFixed(1));
    });
  }
  if (status) status.textContent = "Live: updates every second.";
}

// Replaces a live list's rows; text only, so tracked values stay inert.
function fillRows(list, rows) {
  const svgNs = "http://www.w3.org/2000/svg";
  const max = Math.max(1, ...rows.map((r) => r[1]));
  const items = rows.map(([label, n]) => {
    const li = document.createElement("li");
    const bar = document.createElementNS(svgNs, "svg");
    bar.setAttribute("class", "bar");
    bar.setAttribute("viewBox", "0 0 100 1");
    bar.setAttribute("preserveAspectRatio", "none");
    bar.setAttribute("aria-hidden", "true");
    const rect = document.createElementNS(svgNs, "rect");
    rect.setAttribute("height", "1");
    rect.setAttribute("width", ((100 * n) / max).toFixed(1));
    bar.append(rect);
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const num = document.createElement("span");
    num.className = "num";
    num.textContent = String(n);
    li.append(bar, name, num);
    return li;
  });
  list.replaceChildren(...items);
}
