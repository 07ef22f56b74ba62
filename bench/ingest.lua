-- wrk script for bench/ingest.sh: realistic POST /api/event traffic.
--
-- Each wrk thread pre-builds a pool of requests in init() (building them per
-- request would cost wrk CPU it shares with the server) and cycles through it.
-- The pool mixes ~50 real browser User-Agents, thousands of client IPs in
-- X-Forwarded-For (one IP and User-Agent per simulated visitor), 500 paths,
-- referrers (search, social, other sites, direct), screen widths, and a few
-- custom events with props. Every payload is valid and every User-Agent is a
-- browser, so every 202 must be a stored event.
--
-- done() prints one machine-readable line:
--   RESULT requests=N duration_us=N non2xx=N socket_errors=N rps=F p50_us=N p90_us=N p99_us=N max_us=N

local user_agents = {
  -- Chrome, desktop
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36",
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Safari/537.36",
  "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  -- Edge, Opera, Vivaldi, Yandex
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Safari/537.36 Edg/123.0.2420.97",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 OPR/110.0.0.0",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 OPR/110.0.0.0",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Vivaldi/6.7.3329.21",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 YaBrowser/24.4.0.0 Safari/537.36",
  -- Firefox, desktop
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:124.0) Gecko/20100101 Firefox/124.0",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Gecko/20100101 Firefox/115.0",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0",
  "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
  "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:124.0) Gecko/20100101 Firefox/124.0",
  "Mozilla/5.0 (X11; Fedora; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
  -- Safari, desktop
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Safari/605.1.15",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Safari/605.1.15",
  -- iPhone / iPad
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_3 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.3 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 16_7_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 15_8 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/15.6.6 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) FxiOS/125.0 Mobile/15E148 Safari/605.1.15",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) EdgiOS/124.2478.50 Version/17.0 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1",
  -- Android
  "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.6312.118 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 13; SM-A536B) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.6261.119 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 13; SAMSUNG SM-A546B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/23.0 Chrome/115.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 12; M2101K6G) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 13; 2201117TG) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/123.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 11; moto g(30)) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0",
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 EdgA/124.0.2478.49",
  "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Linux; U; Android 12; en-US; RMX3085 Build/SP1A.210812.016) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/100.0.4896.58 UCBrowser/13.6.2.1316 Mobile Safari/537.36",
  "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36 OPR/81.1.4292.78956",
}

local referrers = {
  "", "", "", "", "", "", -- direct traffic, no referrer
  "https://www.google.com/", "https://www.google.com/", "https://www.google.com/", "https://www.google.de/",
  "https://www.bing.com/", "https://duckduckgo.com/", "https://search.brave.com/", "https://www.ecosia.org/",
  "https://news.ycombinator.com/", "https://news.ycombinator.com/item?id=40123456",
  "https://www.reddit.com/r/selfhosted/", "https://old.reddit.com/r/programming/comments/1c2d3e4/",
  "https://t.co/aBcD3fGh1J", "https://www.linkedin.com/", "https://www.facebook.com/", "https://l.facebook.com/",
  "https://github.com/", "https://github.com/awesome-selfhosted/awesome-selfhosted",
  "https://lobste.rs/", "https://mastodon.social/", "https://dev.to/", "https://medium.com/",
  "https://example.com/", "https://example.com/blog/",
}

local sections = { "blog", "docs", "guides", "pricing", "changelog", "features", "integrations", "help", "about", "careers" }
local words = { "getting-started", "install", "configuration", "privacy", "dashboard", "api", "goals", "funnels",
                "self-hosting", "performance", "upgrade", "backups", "security", "teams", "billing", "export",
                "import", "events", "sessions", "reports", "alerts", "filters", "segments", "embedding", "faq" }
local paths = { "/" }
for _, s in ipairs(sections) do
  for _, w in ipairs(words) do
    paths[#paths + 1] = "/" .. s .. "/" .. w
    if #paths >= 500 then break end
  end
  if #paths >= 500 then break end
end
while #paths < 500 do
  paths[#paths + 1] = "/blog/" .. (2020 + #paths % 6) .. "/post-" .. #paths
end

local widths = { 1920, 1920, 1536, 1440, 1366, 1280, 2560, 390, 390, 393, 412, 414, 360, 375, 768, 820, 1024 }
local goals = { "Signup", "Download", "Outbound Link: Click", "File Download", "Newsletter" }
local plans = { "free", "pro", "business" }

local POOL = 20000           -- pre-built requests per thread
local VISITORS = 5000        -- distinct visitors (IP + User-Agent) per thread

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  table.insert(threads, thread)
  counter = counter + 1
end

local function esc(s)
  return (s:gsub('\\', '\\\\'):gsub('"', '\\"'))
end

function init(args)
  math.randomseed(1000 + id)
  pool = {}
  for i = 1, POOL do
    local v = math.random(0, VISITORS - 1)
    -- Public-looking addresses, one per (thread, visitor); none is 127.0.0.1.
    local ip = string.format("%d.%d.%d.%d", 20 + id * 40 + v % 40, math.floor(v / 40) % 250 + 1, (v * 7) % 250 + 1, v % 200 + 10)
    local ua = user_agents[v % #user_agents + 1]
    local path = paths[math.random(#paths)]
    local url = "https://example.com" .. path
    if math.random(10) == 1 then
      url = url .. "?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
    end
    local ref = referrers[math.random(#referrers)]
    local width = widths[v % #widths + 1]
    local body
    if math.random(10) == 1 then
      body = string.format('{"n":"%s","u":"%s","d":"example.com","r":%s,"w":%d,"p":{"plan":"%s","position":"%d"}}',
        esc(goals[math.random(#goals)]), esc(url), ref == "" and "null" or ('"' .. esc(ref) .. '"'), width,
        plans[math.random(#plans)], math.random(1, 5))
    else
      body = string.format('{"n":"pageview","u":"%s","d":"example.com","r":%s,"w":%d}',
        esc(url), ref == "" and "null" or ('"' .. esc(ref) .. '"'), width)
    end
    local headers = {
      ["Content-Type"] = (i % 2 == 0) and "text/plain" or "application/json",
      ["User-Agent"] = ua,
      ["X-Forwarded-For"] = ip,
      ["Accept-Language"] = "en-US,en;q=0.9",
      ["Origin"] = "https://example.com",
    }
    pool[i] = wrk.format("POST", "/api/event", headers, body)
  end
  n = 0
end

-- WRK_DELAY_MS paces each connection: a pause of that many milliseconds
-- before each of its requests, so C connections offer about
-- C * 1000 / WRK_DELAY_MS requests a second (bench/upgrade.sh: a steady
-- load rather than as much as the server takes). Unset: no pause.
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0") or 0
if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function request()
  n = n % POOL + 1
  return pool[n]
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d duration_us=%d non2xx=%d socket_errors=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    summary.requests / secs, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
