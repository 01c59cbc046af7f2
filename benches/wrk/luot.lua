-- wrk script for benches/load.py (and soak.py): realistic beacons and reads,
-- built once and cycled, so that wrk spends little per request.
--
-- LUOT_BENCH_MODE: quiet (POST /hit?quiet=1), gif (GET /hit.gif),
-- answer (POST /hit answering figures), counters (GET the site's figures),
-- flood (GET the figures of a page never seen, a new one each request).
-- LUOT_BENCH_SITE (default demo), LUOT_BENCH_PAGES (default 10000),
-- LUOT_BENCH_VISITORS (default 100000), LUOT_BENCH_CLIENTS (default 10000),
-- LUOT_BENCH_REQUESTS (distinct requests built; default the larger of the
-- pages and 10000), LUOT_BENCH_FLOOD_CLIENTS (default 10).
--
-- Each built request has its own page (every page is in each cycle, in a
-- shuffled order), a random visitor, one of eight browser User-Agents and
-- an X-Forwarded-For client address (documentation ranges). init() builds
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
}

-- Client addresses: the three IPv4 documentation /24s, then distinct IPv6
-- documentation /64s (luot keys IPv6 clients by /64).
local function client(i)
  if i <= 254 then return "192.0.2." .. i end
  if i <= 508 then return "198.51.100." .. (i - 254) end
  if i <= 762 then return "203.0.113." .. (i - 508) end
  return string.format("2001:db8:%x:%x::1", math.floor(i / 65536), i % 65536)
end

local function pick(n) return math.random(1, n) end

-- One beacon or read, as wrk will send it.
local function build(page_no)
  local page = "/news/article-" .. page_no
  local vid = "v" .. pick(visitors)
  local headers = {
    ["User-Agent"] = agents[pick(#agents)],
    ["X-Forwarded-For"] = client(pick(clients)),
  }
  if mode == "gif" then
    return wrk.format("GET", "/hit.gif?site=" .. site .. "&page=" .. page .. "&vid=" .. vid, headers)
  elseif mode == "counters" then
    return wrk.format("GET", "/api/v1/sites/" .. site .. "/counters", headers)
  end
  headers["Content-Type"] = "text/plain;charset=UTF-8"
  local body = '{"site":"' .. site .. '","page":"https://news.example' .. page ..
    '?utm_source=fb#top","ref":"https://www.google.com/","vid":"' .. vid .. '"}'
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
