(function () {
  "use strict";
  var root = document.getElementById("dash");
  var data = JSON.parse(document.getElementById("luot-data").textContent);
  var L = data.labels;
  var lang = document.documentElement.lang;
  var token = root.getAttribute("data-token");
  var base = "../api/v1/sites/" + encodeURIComponent(root.getAttribute("data-site"));
  var compact = null;
  try {
    compact = new Intl.NumberFormat(lang, { notation: "compact", maximumFractionDigits: 1 });
  } catch (e) {}

  function fmt(n) { return Number(n).toLocaleString(lang); }
  function short(n) { return compact ? compact.format(n) : fmt(n); }
  function esc(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return "&#" + c.charCodeAt(0) + ";";
    });
  }
  // The top of an axis with four round steps (1, 2, 2.5 or 5 times a
  // power of ten each).
  function nice(max) {
    var want = max / 4;
    if (want <= 1) return 4;
    var p = Math.pow(10, Math.floor(Math.log(want) / Math.LN10));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) {
      if (steps[i] * p >= want) return 4 * steps[i] * p;
    }
    return 40 * p;
  }
  // "2026-11-27" or "2026-11" as a short local label, read as UTC so the
  // reader's zone cannot move it to another day.
  function when(date, monthly) {
    var parts = date.split("-");
    var d = new Date(Date.UTC(+parts[0], +parts[1] - 1, monthly ? 1 : +parts[2]));
    var opts = monthly
      ? { month: lang === "vi" ? "numeric" : "short", year: "2-digit", timeZone: "UTC" }
      : { day: "numeric", month: "numeric", timeZone: "UTC" };
    try { return d.toLocaleDateString(lang, opts); } catch (e) { return date; }
  }

  // Bars of hits, with a line of visitors when the series has them.
  function chart(el, points, monthly) {
    if (!el) return;
    var w = Math.max(el.clientWidth || 0, 260);
    var h = monthly ? 170 : 210;
    var padL = 44, padR = 8, padT = 10, padB = 24;
    var iw = w - padL - padR, ih = h - padT - padB;
    var n = points.length || 1;
    var max = 0, withVisitors = false;
    points.forEach(function (p) {
      max = Math.max(max, p.hits, p.visitors || 0);
      if (p.visitors != null) withVisitors = true;
    });
    var top = nice(max);
    var step = iw / n, bw = Math.max(1, step * 0.68);
    function y(v) { return padT + ih - v / top * ih; }
    var s = '<svg class="plot" width="' + w + '" height="' + h +
      '" viewBox="0 0 ' + w + " " + h + '" role="img" aria-label="' + esc(monthly ? L.months : L.days) + '">';
    for (var g = 0; g <= 4; g++) {
      var gy = y(top * g / 4).toFixed(1);
      s += '<line class="grid" x1="' + padL + '" x2="' + (w - padR) + '" y1="' + gy + '" y2="' + gy + '"/>' +
        '<text x="' + (padL - 6) + '" y="' + (+gy + 4) + '" text-anchor="end">' + esc(short(top * g / 4)) + "</text>";
    }
    var every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(iw / 46))));
    points.forEach(function (p, i) {
      var x = padL + i * step + (step - bw) / 2;
      var bh = Math.max(p.hits > 0 ? 1 : 0, p.hits / top * ih);
      var tip = p.date + ": " + fmt(p.hits) + " " + L.hits +
        (p.visitors != null ? ", " + fmt(p.visitors) + " " + L.visitors : "");
      s += '<rect class="bar' + (i === n - 1 ? " now" : "") + '" data-date="' + esc(p.date) + '" data-hits="' + p.hits +
        '" x="' + x.toFixed(1) + '" y="' + (padT + ih - bh).toFixed(1) + '" width="' + bw.toFixed(1) +
        '" height="' + bh.toFixed(1) + '"><title>' + esc(tip) + "</title></rect>";
      if ((n - 1 - i) % every === 0) {
        s += '<text x="' + (padL + i * step + step / 2).toFixed(1) + '" y="' + (h - 6) +
          '" text-anchor="middle">' + esc(when(p.date, monthly)) + "</text>";
      }
    });
    if (withVisitors) {
      var line = [];
      points.forEach(function (p, i) {
        if (p.visitors == null) return;
        var cx = (padL + i * step + step / 2).toFixed(1), cy = y(p.visitors).toFixed(1);
        line.push(cx + "," + cy);
        s += '<circle class="pt" cx="' + cx + '" cy="' + cy + '" r="2.5"/>';
      });
      s += '<polyline class="vline" points="' + line.join(" ") + '"/>';
    }
    el.innerHTML = s + "</svg>";
  }

  // A most-read list, each page with a meter of its share of the first.
  function tops(el, pages) {
    if (!el) return;
    el.textContent = "";
    if (!pages.length) {
      var none = document.createElement("li");
      none.className = "empty";
      none.textContent = L.empty;
      el.appendChild(none);
      return;
    }
    var first = pages[0].hits || 1;
    pages.forEach(function (p) {
      var li = document.createElement("li");
      var meter = document.createElement("span");
      meter.className = "meter";
      meter.style.width = Math.max(2, Math.round(p.hits / first * 100)) + "%";
      var page = document.createElement("span");
      page.className = "page";
      page.textContent = p.title || p.page;
      page.title = p.page;
      var count = document.createElement("span");
      count.className = "n";
      count.textContent = fmt(p.hits);
      li.appendChild(meter);
      li.appendChild(page);
      li.appendChild(count);
      el.appendChild(li);
    });
  }

  function draw() {
    chart(document.getElementById("chart-days"), data.days, false);
    chart(document.getElementById("chart-months"), data.months, true);
    tops(document.getElementById("top-today"), data.top.today);
    tops(document.getElementById("top-week"), data.top.week);
  }

  function put(f) {
    root.querySelectorAll("[data-k]").forEach(function (el) {
      var v = f[el.getAttribute("data-k")];
      if (typeof v === "number") el.textContent = fmt(v);
    });
    root.querySelectorAll("[data-v]").forEach(function (el) {
      var v = f.visitors && f.visitors[el.getAttribute("data-v")];
      if (typeof v === "number") el.textContent = fmt(v);
    });
    var asOf = document.getElementById("as-of");
    if (asOf && f.as_of) asOf.textContent = f.as_of;
  }

  function get(path, auth) {
    var headers = {};
    if (auth && token) headers.Authorization = "Bearer " + token;
    return fetch(base + path, { cache: "no-store", credentials: "omit", headers: headers })
      .then(function (r) { return r.ok ? r.json() : null; });
  }

  var ticks = 0;
  function tick() {
    if (!window.fetch) return;
    get("/counters", false).then(function (f) { if (f) put(f); }).catch(function () {});
    ticks += 1;
    if (ticks % data.reload_every !== 0) return;
    Promise.all([
      get("/series", true),
      get("/series?by=month", true),
      get("/top?period=today&limit=" + data.limit, true),
      get("/top?period=week&limit=" + data.limit, true)
    ]).then(function (r) {
      if (!r[0] || !r[1] || !r[2] || !r[3]) return;
      data.days = r[0].points;
      data.months = r[1].points;
      data.top.today = r[2].pages;
      data.top.week = r[3].pages;
      draw();
    }).catch(function () {});
  }

  draw();
  // Redrawn to the width it gets (a phone turned, a window resized).
  var resized = null, drawnAt = root.clientWidth;
  function later() {
    if (root.clientWidth === drawnAt) return;
    drawnAt = root.clientWidth;
    clearTimeout(resized);
    resized = setTimeout(draw, 100);
  }
  window.addEventListener("resize", later);
  if (window.ResizeObserver) new ResizeObserver(later).observe(root);
  setInterval(tick, data.refresh_ms);
})();
