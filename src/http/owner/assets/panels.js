(function () {
  "use strict";
  // "Đang đọc" every 10 s, and the breakdowns for the period picked.
  // Every value from the API is set with textContent: it stays text.
  var root = document.getElementById("dash");
  var box = document.getElementById("reading-now");
  if (!root || !box || !window.fetch) return;
  var P = JSON.parse(box.getAttribute("data-panels"));
  var lang = document.documentElement.lang;
  var token = root.getAttribute("data-token");
  var base = "../api/v1/sites/" + encodeURIComponent(root.getAttribute("data-site"));
  var period = "today", picked = null;
  var dims = ["channel", "source", "utm_source", "utm_medium", "utm_campaign", "device", "browser", "os", "country"];

  function $(id) { return document.getElementById(id); }
  function fmt(n) { return Number(n).toLocaleString(lang); }
  // Fixed values (a channel, a device, a system's "Other", a country
  // code) and markers such as "(other)" have names; anything else is
  // shown as sent.
  var named = { channel: 1, device: 1, os: 1, country: 1 };
  function name(by, v) {
    var has = Object.prototype.hasOwnProperty.call(P.names, v);
    return has && (named[by] || v.charAt(0) === "(") ? P.names[v] : v;
  }
  function get(path) {
    var headers = {};
    if (token) headers.Authorization = "Bearer " + token;
    return fetch(base + path, { cache: "no-store", credentials: "omit", headers: headers })
      .then(function (r) { return r.ok ? r.json() : null; });
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  // A ranked list with bars; rows are {label, n, title}; with `pick`,
  // each label is a button.
  function ranked(list, rows, empty, pick) {
    if (!list) return;
    list.textContent = "";
    if (!rows.length) {
      list.appendChild(el("li", "empty", empty));
      return;
    }
    var max = 1;
    rows.forEach(function (r) { max = Math.max(max, r.n); });
    rows.forEach(function (r) {
      var li = el("li");
      var meter = el("span", "meter");
      meter.style.width = Math.max(2, Math.round(r.n / max * 100)) + "%";
      var label = el(pick ? "button" : "span", "page", r.label);
      label.title = r.title || r.label;
      if (pick) {
        label.type = "button";
        label.addEventListener("click", function () { pick(r.label); });
      }
      li.appendChild(meter);
      li.appendChild(label);
      li.appendChild(el("span", "n", fmt(r.n)));
      list.appendChild(li);
    });
  }

  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) { return "&#" + c.charCodeAt(0) + ";"; });
  }
  // The site's online per minute over the last hour, as a small area
  // (numbers and an escaped label only).
  function hour(box, points) {
    if (!box || !points.length) return;
    var w = Math.max(box.clientWidth || 0, 240), h = 64, max = 1;
    points.forEach(function (p) { max = Math.max(max, p[1]); });
    var step = w / Math.max(1, points.length - 1);
    var line = points.map(function (p, i) {
      return (i * step).toFixed(1) + "," + (h - 4 - p[1] / max * (h - 8)).toFixed(1);
    }).join(" ");
    var label = P.last_hour + ": " + fmt(points[points.length - 1][1]) + " (max " + fmt(max) + ")";
    box.innerHTML = '<svg class="plot hour" viewBox="0 0 ' + w + " " + h + '" role="img" aria-label="' +
      esc(P.last_hour) + '" data-points="' + points.length + '"><title>' + esc(label) + "</title>" +
      '<polygon class="area" points="0,' + h + " " + line + " " + w + "," + h + '"/>' +
      '<polyline class="vline" points="' + line + '"/></svg>';
  }

  function now() {
    get("/online?limit=" + P.now_pages).then(function (a) {
      if (!a) return;
      ranked($("now-pages"), a.pages.map(function (p) {
        return { label: p.page, n: p.online };
      }), P.nobody);
      hour($("chart-online"), a.hour);
      if ($("fig-online")) $("fig-online").textContent = fmt(a.online);
    }).catch(function () {});
  }

  function values(a) {
    return a.values.map(function (v) { return { label: name(a.by, v.value), n: v.hits, title: v.value }; });
  }
  function breakdown(by, extra, list) {
    return get("/breakdown?by=" + by + "&period=" + period + "&limit=" + P.values + extra)
      .then(function (a) { if (a) ranked(list, values(a), P.empty); });
  }
  // A top page's sources, one click away.
  function pick(page) {
    picked = page;
    $("bd-page-hint").textContent = page;
    [].forEach.call($("bd-pages").querySelectorAll("button"), function (b) {
      b.parentNode.classList.toggle("sel", b.textContent === page);
    });
    breakdown("source", "&page=" + encodeURIComponent(page), $("bd-page-sources")).catch(function () {});
  }
  function breakdowns() {
    dims.forEach(function (by) { breakdown(by, "", $("bd-" + by)).catch(function () {}); });
    get("/top?period=" + period + "&limit=" + P.source_pages).then(function (a) {
      if (!a) return;
      var pages = a.pages.map(function (p) { return { label: p.page, n: p.hits }; });
      ranked($("bd-pages"), pages, P.empty, pick);
      if (pages.length) pick(picked && pages.some(function (p) { return p.label === picked; }) ? picked : pages[0].label);
    }).catch(function () {});
  }
  [].forEach.call(document.querySelectorAll("#bd-periods button"), function (b) {
    b.addEventListener("click", function () {
      period = b.getAttribute("data-period");
      [].forEach.call(b.parentNode.children, function (o) { o.setAttribute("aria-pressed", String(o === b)); });
      breakdowns();
    });
  });

  now();
  breakdowns();
  setInterval(now, P.refresh_ms);
})();
