-- wrk script for benches/load.py (and soak.py): realistic beacons and reads,
-- built once and cycled, so that wrk spends little per request.
--
-- LUOT_BENCH_MODE: quiet (POST /hit?quiet=1), gif (GET /hit.gif),
-- answer (POST /hit answering figures; beacons carry a page title),
-- counters (GET the site's figures), pages (GET thirty pages' figures, a
-- front page's view counts),
-- flood (GET the figures of a page never seen, a new one each request).
-- LUOT_BENCH_SITE (default demo), LUOT_BENCH_PAGES (default 10000),
-- LUOT_BENCH_VISITORS (default 100000), LUOT_BENCH_CLIENTS (default 10000),
-- LUOT_BENCH_REQUESTS (distinct requests built; default the larger of the
-- pages and 10000), LUOT_BENCH_FLOOD_CLIENTS (default 10).
--
-- Each built request has its own page (every page is in each cycle, in a
-- shuffled order), a random visitor, one of twenty browser User-Agents
-- (in-app browsers among them), a referrer from a Vietnamese newsroom's mix
-- (Google and Discover, Facebook, Zalo's in-app browser with none, Cốc Cốc,
-- Báo Mới, internal, direct), campaign parameters on a tenth, and an
-- X-Forwarded-For client address, most in Vietnamese blocks, some from
-- other countries. init() builds
-- them with wrk.format; request() only returns the next one. Building them
-- per request (random numbers, concatenation, wrk.format's header table)
-- cost wrk a whole core and capped every server at wrk's pace. The flood
-- mode alone builds per request, one concatenation, so that no page repeats
-- (a cache of pages never seen must not absorb it); its clients are RFC
-- 2544 benchmarking addresses, apart from the beacons'. done() prints one
-- "RESULT key=value ..." line for the driver to parse.

local mode = os.getenv("LUOT_BENCH_MODE") or "quiet"
local site = os.getenv("LUOT_BENCH_SITE") or "demo"
local pages = tonumber(os.getenv("LUOT_BENCH_PAGES") or "10000")
local visitors = tonumber(os.getenv("LUOT_BENCH_VISITORS") or "100000")
local clients = tonumber(os.getenv("LUOT_BENCH_CLIENTS") or "10000")
local count = tonumber(os.getenv("LUOT_BENCH_REQUESTS") or "0")
if count <= 0 then count = math.max(pages, 10000) end
local flood_clients = tonumber(os.getenv("LUOT_BENCH_FLOOD_CLIENTS") or "10")
-- After this many seconds, send only GET /healthz, so that no beacon is in
-- flight when wrk stops: every beacon sent is then answered and seen.
local cutoff = tonumber(os.getenv("LUOT_BENCH_CUTOFF") or "0")
-- LUOT_BENCH_DELAY_MS: each connection waits this long before each request,
-- so the offered load stays below what either server can take (the
-- latency of an unsaturated server, not of a queue).
local delay_ms = tonumber(os.getenv("LUOT_BENCH_DELAY_MS") or "0")
if delay_ms > 0 then
  function delay() return delay_ms end
end
local beacon_mode = mode == "quiet" or mode == "gif" or mode == "answer"
local started = nil
local stopped = false
local built = {}
local next_at = 1
local asked = 0
local healthz = nil
local flood_head, flood_tails, flood_n = nil, {}, 0
beacons = 0
local threads = {}

local agents = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) coc_coc_browser/134.0.232 Chrome/128.0.6613.232 Safari/537.36",
  "Mozilla/5.0 (Linux; Android 13; 2201117TG Build/TKQ1.221114.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.144 Mobile Safari/537.36 Zalo android/12100562 ZaloTheme/light ZaloLanguage/vi",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/485.0.0.44.107;FBBV/650000000;FBDV/iPhone14,5;FBMD/iPhone;FBSN/iOS;FBSV/17.6;FBSS/3;FBCR/;FBID/phone;FBLC/vi_VN;FBOP/80]",
  "Mozilla/5.0 (Linux; Android 14; SM-A546E Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/131.0.6778.39 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/490.0.0.48.109;]",
  "Mozilla/5.0 (Linux; Android 14; CPH2591 Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/130.0.6723.107 Mobile Safari/537.36 Instagram 357.0.0.25.101 Android (34/14; 480dpi; 1080x2400; OPPO; CPH2591; OP5961L1; qcom; vi_VN; 658000000)",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 musical_ly_36.5.0 JsSdk/2.0 NetType/WIFI Channel/App Store ByteLocale/vi Region/VN",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Zalo iOS/452 ZaloTheme/light ZaloLanguage/vi",
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 13; SM-X200) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0",
  "Mozilla/5.0 (Linux; U; Android 10; vi-VN; Redmi Note 9 Build/QP1A.190711.020) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/100.0.4896.58 UCBrowser/13.4.0.1306 Mobile Safari/537.36",
  "Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
}

-- Where readers come from, weighted like a Vietnamese news site's day: "" is
-- no referrer (direct, or an in-app browser's).
local referrers = {
  "android-app://com.google.android.googlequicksearchbox/", "android-app://com.google.android.googlequicksearchbox/",
  "https://www.google.com/", "https://www.google.com.vn/", "https://www.google.com.vn/",
  "https://l.facebook.com/", "https://m.facebook.com/", "https://lm.facebook.com/",
  "", "", "", "",
  "https://coccoc.com/search?query=tin+moi", "https://baomoi.com/", "https://baomoi.com/",
  "http://localhost/", "http://localhost/tin-tuc/", "https://news.google.com/",
  "https://www.bing.com/", "https://vnexpress.net/", "https://zalo.me/", "https://t.co/abc",
}

-- Campaigns on a tenth of the page views.
local campaigns = {
  "?utm_source=newsletter&utm_medium=email&utm_campaign=sang-nay",
  "?utm_source=facebook&utm_medium=social&utm_campaign=tet-2027",
  "?utm_source=zalo&utm_medium=oa&utm_campaign=thoi-su",
}

-- Client addresses (only ever written into X-Forwarded-For; every request
-- goes to loopback): most in Vietnamese carriers' blocks (VNPT, Viettel,
-- FPT), the rest in Japanese, Singaporean, US and German ones, and a few
-- documentation addresses (unknown country), each distinct, so the rate
-- limiter keys them apart.
local blocks = {
  "14.160", "14.161", "113.160", "113.161", "171.224", "171.225", "27.72", "27.73", "1.52", "1.53",
  "126.0", "175.41", "8.34", "84.128",
}
local function client(i)
  if i <= 254 then return "192.0.2." .. i end
  local n = i - 255
  local block = blocks[n % #blocks + 1]
  local host = math.floor(n / #blocks)
  return block .. "." .. (math.floor(host / 254) % 256) .. "." .. (host % 254 + 1)
end

local function pick(n) return math.random(1, n) end

-- A query parameter's value, percent-encoded.
local function escape(text)
  return (text:gsub("[^%w%-%._~/]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- One beacon or read, as wrk will send it.
local function build(page_no)
  local page = "/news/article-" .. page_no
  local vid = "v" .. pick(visitors)
  local headers = {
    ["User-Agent"] = agents[pick(#agents)],
    ["X-Forwarded-For"] = client(pick(clients)),
  }
  local query = ""
  if pick(10) == 1 then query = campaigns[pick(#campaigns)] end
  local ref = referrers[pick(#referrers)]
  if mode == "gif" then
    return wrk.format("GET", "/hit.gif?site=" .. site .. "&page=" .. escape(page .. query) ..
      "&ref=" .. escape(ref) .. "&vid=" .. vid, headers)
  elseif mode == "counters" then
    return wrk.format("GET", "/api/v1/sites/" .. site .. "/counters", headers)
  elseif mode == "pages" then
    -- A front page's view counts: one of twenty front pages, each listing
    -- thirty articles, as luot.js asks them in one request.
    local front = page_no % 20
    local paths = {}
    for i = 1, 30 do paths[i] = "path=/news/article-" .. (front * 30 + i) end
    return wrk.format("GET", "/api/v1/sites/" .. site .. "/pages?" .. table.concat(paths, "&"), headers)
  end
  headers["Content-Type"] = "text/plain;charset=UTF-8"
  local body = '{"site":"' .. site .. '","page":"https://news.example' .. page ..
    query .. '#top","ref":"' .. ref .. '","vid":"' .. vid ..
    '","title":"Tin tức số ' .. page_no .. ' – Báo Điện tử"}'
  local path = "/hit"
  if mode == "quiet" then path = "/hit?quiet=1" end
  return wrk.format("POST", path, headers, body)
end

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  healthz = wrk.format("GET", "/healthz")
  if mode == "flood" then
    -- "GET /api/...?page=/flood/<run>-" .. n .. " HTTP/1.1\r\n...": the
    -- tail of a request built for "/" is everything after "GET /".
    flood_head = "GET /api/v1/sites/" .. site .. "/counters?page=/flood/" ..
      string.format("%x%x", os.time(), pick(1000000)) .. "-"
    for i = 1, flood_clients do
      local r = wrk.format("GET", "/", { ["X-Forwarded-For"] = "198.18.0." .. i,
                                         ["User-Agent"] = agents[1] })
      flood_tails[i] = r:sub(6)
    end
    return
  end
  -- Every page once per cycle, in a shuffled order.
  local order = {}
  for i = 1, count do order[i] = (i - 1) % pages + 1 end
  for i = count, 2, -1 do
    local j = pick(i)
    order[i], order[j] = order[j], order[i]
  end
  for i = 1, count do built[i] = build(order[i]) end
end

function request()
  if cutoff > 0 and not stopped then
    -- os.time() has a resolution of a second; looking every 64 requests
    -- is often enough and keeps the clock off the per-request path.
    if started == nil then started = os.time() end
    asked = asked + 1
    if asked % 64 == 0 and os.time() - started >= cutoff then stopped = true end
  end
  if stopped then return healthz end
  if mode == "flood" then
    flood_n = flood_n + 1
    return flood_head .. flood_n .. flood_tails[flood_n % flood_clients + 1]
  end
  if beacon_mode then beacons = beacons + 1 end
  local r = built[next_at]
  next_at = next_at + 1
  if next_at > count then next_at = 1 end
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  local sent = 0
  -- wrk builds one request per thread at start that it never sends
  -- (measured: built = answered + 1 per thread, whatever the connections).
  for _, t in ipairs(threads) do sent = sent + math.max((t:get("beacons") or 0) - 1, 0) end
  io.write(string.format(
    "RESULT requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d beacons=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), sent))
end
