/*! luot.js — counts one page view and shows the figures. No cookies, no dependencies.
 * <script async src="https://HOST/luot.js" data-site="demo"></script>
 * <span data-luot="total|today|yesterday|week|month|online"></span> (site figures)
 * <span data-luot-page="total|today|…"></span> (this page's figures)
 * data-luot-pad="8" zero-pads to 8 digits, without digit grouping.
 * <ol data-luot-top="24h" data-luot-limit="5"></ol> most read (1h, today…; data-luot-show-hits)
 * data-luot="record": the best day (data-luot-record="date": its date).
 * <span data-luot-views="/path"></span>: that page's total (data-luot-period="today"), one request for all.
 * #luot-ignore=on in a page's URL: this browser sends nothing (=off undoes). */
(function () {
  "use strict";
  var d = document, w = window, n = navigator;
  var me = d.currentScript;
  if (!me || !me.src) return;
  var site = me.getAttribute("data-site");
  if (!site) return;
  var endpoint = new URL("hit", me.src).href;
  var keys = ["total", "today", "yesterday", "week", "month", "online"];
  var noTrack = n.doNotTrack == "1" || w.doNotTrack == "1" || n.globalPrivacyControl === true;
  var ignoreKey = "luot_ignore:" + site;

  // Own visits (/ignore/SITE): storage is per origin, so the flag is set
  // here, on the site's pages.
  function flag() {
    var m = /luot-ignore=(on|off)/.exec(location.hash);
    try {
      if (m && m[1] == "on") w.localStorage.setItem(ignoreKey, "1");
      else if (m) w.localStorage.removeItem(ignoreKey);
      return w.localStorage.getItem(ignoreKey) == "1";
    } catch (e) {
      return false;
    }
  }
  flag();
  w.addEventListener("hashchange", flag);

  // A random visitor id kept in localStorage (none under DNT / GPC).
  function visitor() {
    if (noTrack) return undefined;
    try {
      var s = w.localStorage, id = s.getItem("luot_vid");
      if (!id || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) {
        var b = new Uint8Array(12);
        w.crypto.getRandomValues(b);
        id = Array.prototype.map.call(b, function (x) { return (x + 256).toString(16).slice(1); }).join("");
        s.setItem("luot_vid", id);
      }
      return id;
    } catch (e) {
      return undefined;
    }
  }

  function fmt(el, v) {
    var pad = parseInt(el.getAttribute("data-luot-pad"), 10);
    return pad > 0 ? String(v).padStart(Math.min(pad, 20), "0") : v.toLocaleString(d.documentElement.lang || undefined);
  }

  function show(figures, attr) {
    if (!figures) return;
    var r = figures.record;
    keys.forEach(function (k) {
      var v = figures[k];
      if (typeof v != "number") return;
      d.querySelectorAll("[" + attr + '="' + k + '"]').forEach(function (el) {
        el.textContent = fmt(el, v);
      });
    });
    if (r) d.querySelectorAll("[" + attr + '="record"]').forEach(function (el) {
      el.textContent = el.getAttribute("data-luot-record") == "date" ? r.date : fmt(el, r.hits);
    });
  }

  function views() {
    var els = d.querySelectorAll("[data-luot-views]"), paths = [];
    els.forEach(function (el) {
      var p = el.getAttribute("data-luot-views");
      if (paths.indexOf(p) < 0 && paths.length < 100) paths.push(p);
    });
    if (paths.length && w.fetch)
      fetch(new URL("api/v1/sites/" + site + "/pages?path=" + paths.map(encodeURIComponent).join("&path="), me.src))
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (a) {
          if (a) els.forEach(function (el) {
            var f = a.pages[paths.indexOf(el.getAttribute("data-luot-views"))];
            var v = f && f[el.getAttribute("data-luot-period") || "total"];
            if (typeof v == "number") el.textContent = fmt(el, v);
          });
        })
        .catch(function () {});
  }
  function ready(f) {
    if (d.readyState == "loading") d.addEventListener("DOMContentLoaded", f);
    else f();
  }
  ready(views);

  function send(ref) {
    if (flag()) return;
    var body = JSON.stringify({ site: site, page: location.href, ref: ref, vid: visitor(), title: d.title });
    // text/plain (fetch's default for a string body): no CORS preflight.
    if (w.fetch) {
      try {
        fetch(endpoint, { method: "POST", keepalive: true, body: body, credentials: "omit" })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (a) {
            if (!a) return;
            // The answer may beat the parser to the footer.
            ready(function () { show(a.site, "data-luot"); show(a.page, "data-luot-page"); });
          })
          .catch(function () {});
        return;
      } catch (e) { /* keepalive unsupported: fall through */ }
    }
    if (n.sendBeacon) n.sendBeacon(endpoint, body);
  }

  // Single-page apps: a new path is a new page view.
  var path = location.pathname, url = location.href;
  function changed() {
    if (location.pathname != path) {
      var from = url;
      path = location.pathname;
      url = location.href;
      send(from);
    } else {
      url = location.href;
    }
  }
  ["pushState", "replaceState"].forEach(function (m) {
    var orig = history[m];
    if (!orig) return;
    history[m] = function () {
      var r = orig.apply(this, arguments);
      changed();
      return r;
    };
  });
  w.addEventListener("popstate", changed);

  // Most-read lists, built as text: never markup from the answer.
  function tops() {
    d.querySelectorAll("[data-luot-top]").forEach(function (el) {
      fetch(new URL("api/v1/sites/" + site + "/top?period=" + el.getAttribute("data-luot-top") +
        "&limit=" + (el.getAttribute("data-luot-limit") || 5), me.src), { credentials: "omit" })
        .then(function (r) { return r.json(); })
        .then(function (a) {
          el.textContent = "";
          a.pages.forEach(function (p) {
            var li = el.appendChild(d.createElement("li")), l = li.appendChild(d.createElement("a"));
            l.setAttribute("href", "/" + p.page.replace(/^\/+/, ""));
            l.textContent = p.title || p.page;
            if (el.hasAttribute("data-luot-show-hits")) li.append(" " + p.hits.toLocaleString());
          });
        })
        .catch(function () {});
    });
  }
  if (w.fetch) d.readyState == "loading" ? d.addEventListener("DOMContentLoaded", tops) : tops();

  send(d.referrer);
})();
