
-- KEYS[1] watermarks, KEYS[2..1+n] counters, then groups of sketches, each
-- counted as one union. ARGV[1] producer, ARGV[2] kind ('c' | 'z'),
-- ARGV[3] page, ARGV[4] n, ARGV[5..] the size of each group. Returns the
-- values, the watermark, then one count per group; for the site ('c'),
-- then the record day's hits and date ('0' and '' before any), from the
-- record hash, which is the last key.
local n = tonumber(ARGV[4])
local out = {}
for i = 2, n + 1 do
  local v
  if ARGV[2] == 'z' then
    v = redis.call('ZSCORE', KEYS[i], ARGV[3])
  else
    v = redis.call('GET', KEYS[i])
  end
  out[i - 1] = v or '0'
end
out[n + 1] = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
local k = n + 2
for g = 5, #ARGV do
  local size = tonumber(ARGV[g])
  if size > 0 then
    out[#out + 1] = tostring(redis.call('PFCOUNT', unpack(KEYS, k, k + size - 1)))
  else
    out[#out + 1] = '0'
  end
  k = k + size
end
if ARGV[2] == 'c' then
  local record = redis.call('HMGET', KEYS[#KEYS], 'hits', 'date')
  out[#out + 1] = record[1] or '0'
  out[#out + 1] = record[2] or ''
end
return out
