-- wrk script for bench/run.sh: one request shape per run, set from the environment, and a
-- machine-readable summary line appended to $WRK_OUT when the run ends.
--
--   WRK_METHOD     GET | POST | PATCH            (default GET)
--   WRK_BODY_FILE  file whose bytes are the body (optional)
--   WRK_AUTH       Authorization header value     (optional)
--   WRK_CTYPE      Content-Type for the body      (default application/json)
--   WRK_ACCEPT     Accept header                  (default application/json)
--   WRK_LABEL      recorded as-is in the summary
--   WRK_OUT        file the summary (one JSON object per line) is appended to

local method = os.getenv("WRK_METHOD") or "GET"
local body_file = os.getenv("WRK_BODY_FILE")
local auth = os.getenv("WRK_AUTH")

wrk.method = method
wrk.headers["Accept"] = os.getenv("WRK_ACCEPT") or "application/json"
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = os.getenv("WRK_CTYPE") or "application/json"
end

-- No `request` function: wrk then formats the request once per thread and resends its bytes,
-- so the load generator spends nothing in Lua per request.

-- A run is measured in slices, each its own wrk process (bench/run.sh), so each slice records
-- its latency at a grid of quantiles around the median and the 99th percentile: bench/tool.py
-- merges a run's slices by mixing their distributions, and finds the run's own p50 and p99.
local function quantile_grid(latency)
  local points = {}
  local function add(from, to, step)
    for p = from, to + step / 2, step do
      points[#points + 1] = string.format("[%.2f,%d]", p, latency:percentile(p))
    end
  end
  add(2, 96, 2)
  add(96.5, 99.9, 0.1)
  return "[" .. table.concat(points, ",") .. "]"
end

done = function(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  local line = string.format(
    '{"label":"%s","requests":%d,"seconds":%.3f,"rps":%.1f,' ..
    '"p50_us":%d,"p75_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,' ..
    '"quantiles":%s,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    os.getenv("WRK_LABEL") or "", summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max, quantile_grid(latency),
    e.connect, e.read, e.write, e.status, e.timeout)
  local out = os.getenv("WRK_OUT")
  if out and out ~= "" then
    local f = assert(io.open(out, "a"))
    f:write(line)
    f:close()
  else
    io.write(line)
  end
end
