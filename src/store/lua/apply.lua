
-- KEYS[1] watermarks, KEYS[2] watermark times, KEYS[3] scratch, then the
-- counter keys group by group, then the breakdown hashes, then one key per
-- sketch.
-- ARGV[1] producer, ARGV[2] padded sequence, ARGV[3] group count; per
-- group: kind ('c' counter | 'z' page), key count, entry count, one expire
-- per key (unix seconds, 0 = never), then the entries: hits for 'c'; for
-- 'z' the members, then their hits in the same order (a member at most
-- once per group). Every entry of a group is added to each of its keys.
-- Then the breakdown group count; per group: kind ('s' site | 'p' page),
-- expire, bound (distinct values a counter may hold), hash count; per
-- hash: field count, the fields (each once: a site hash's are its values,
-- a page hash's '<dimension index>:<value>'), then their hits in order.
-- Then the title count and that many page, title pairs (one key, the
-- site's title hash, when the count is not zero).
-- Then the window count (0 for a batch of history); per window: name,
-- bucket width (seconds), bucket count, the batch's bucket index.
-- Then per sketch: kind ('m' members | 'r' registers), expire, member
-- count (for 'm'), members... or the blob.
-- The last key, KEYS[#KEYS], is the site's record day hash (see the
-- record block at the end); no argument goes with it.
local producer = ARGV[1]
local seq = ARGV[2]
local format = string.format
local t = redis.call('TIME')
local now = tonumber(t[1])
local mark = redis.call('HGET', KEYS[1], producer)
if mark and seq <= mark then
  return {0, 0}
end
redis.call('HSET', KEYS[1], producer, seq)
redis.call('HSET', KEYS[2], producer, now)
local late = 0
-- The site's key prefix, 'luot:{site}:' (KEYS[1] is its 'wm').
local prefix = string.sub(KEYS[1], 1, -3)
-- Where the pages' all-time entries are in ARGV, for the rolling
-- windows: {first member, count, hits table} per group that adds to it.
local ptotal, totals = prefix .. 'p:t', {}
local a = 4
local k = 4
-- A key may be in several groups: expire it once per batch.
local expiring = {}
-- Record day: the site day counters ('c' keys named '…:h:d:<date>') this
-- batch increased, date by key.
local record_days = {}
for g = 1, tonumber(ARGV[3]) do
  local kind, nkeys, n = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local first = a + 3 + nkeys
  -- A page's hits, parsed once for all the group's keys.
  local hits = {}
  if kind == 'z' then
    for i = 1, n do
      hits[i] = tonumber(ARGV[first + n + i - 1])
    end
  end
  for j = 0, nkeys - 1 do
    local key, exp = KEYS[k + j], tonumber(ARGV[a + 3 + j])
    if exp > 0 and exp <= now then
      late = late + n
    else
      if kind == 'z' and key == ptotal then
        totals[#totals + 1] = {first, n, hits}
      end
      if kind == 'z' then
        -- Read the scores of up to 1000 pages, add, write them back: two
        -- variadic calls where a ZINCRBY per page cost a call each. Scores
        -- go back as '%d' strings, not numbers, which Redis 7.0 would
        -- format with the slower '%.17g'.
        for c = 0, n - 1, 1000 do
          local len = math.min(1000, n - c)
          local m = first + c
          local scores = redis.call('ZMSCORE', key, unpack(ARGV, m, m + len - 1))
          local scored = {}
          for i = 0, len - 1 do
            local was = tonumber(scores[i + 1]) or 0
            scored[2 * i + 1] = format('%d', was + hits[c + i + 1])
            scored[2 * i + 2] = ARGV[m + i]
          end
          redis.call('ZADD', key, unpack(scored))
        end
      else
        for e = first, first + n - 1 do
          redis.call('INCRBY', key, ARGV[e])
        end
        local day = string.match(key, ':h:d:(%d+%-%d+%-%d+)$')
        if day then
          record_days[key] = day
        end
      end
      if exp > 0 and expiring[key] ~= exp then
        redis.call('EXPIREAT', key, exp)
        expiring[key] = exp
      end
    end
  end
  k = k + nkeys
  if kind == 'z' then
    a = first + 2 * n
  else
    a = first + n
  end
end
-- Breakdowns. A counter holds at most `bound` distinct values besides
-- '(other)' (luot's OTHER); a value it does not hold once full goes there.
-- Per hash: one HMGET of the fields the batch names, one HSET of their new
-- values (per 1,000 fields), an HINCRBY of a counter's '(other)' when a
-- value overflowed, and the values a counter holds are counted only when
-- one it does not hold arrives.
local OTHER = '(other)'
local ngroups = tonumber(ARGV[a])
a = a + 1
for g = 1, ngroups do
  local kind, exp, bound, nhashes = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  a = a + 4
  -- Past its expiry a hash is gone: skipped, never recreated without a
  -- TTL.
  local live = not (exp > 0 and exp <= now)
  for h = 1, nhashes do
    local key = KEYS[k]
    k = k + 1
    local n = tonumber(ARGV[a])
    local f0, h0 = a + 1, a + 1 + n
    a = a + 1 + 2 * n
    if live then
      -- Tables are made only as needed: a page's hash is most of a
      -- flush, and typically holds all its batch's values already.
      local was
      if n <= 1000 then
        was = redis.call('HMGET', key, unpack(ARGV, f0, f0 + n - 1))
      else
        was = {}
        for c = 0, n - 1, 1000 do
          local got = redis.call('HMGET', key, unpack(ARGV, f0 + c, f0 + math.min(c + 999, n - 1)))
          for i = 1, #got do
            was[c + i] = got[i]
          end
        end
      end
      local names, held, over = nil, nil, nil
      local updates = {}
      for i = 1, n do
        local field, hits = ARGV[f0 + i - 1], tonumber(ARGV[h0 + i - 1])
        if was[i] then
          updates[#updates + 1] = field
          updates[#updates + 1] = format('%d', tonumber(was[i]) + hits)
        else
          -- A page's fields are '<dimension index>:<value>'.
          local prefix = ''
          if kind == 'p' then
            prefix = string.match(field, '^[^:]*:')
          end
          if field == prefix .. OTHER then
            updates[#updates + 1] = field
            updates[#updates + 1] = format('%d', hits)
          else
            held = held or {}
            local count = held[prefix]
            if not count then
              if kind == 'p' then
                names = names or redis.call('HKEYS', key)
                count = 0
                local len, other = #prefix, prefix .. OTHER
                for _, f in ipairs(names) do
                  if f:sub(1, len) == prefix and f ~= other then
                    count = count + 1
                  end
                end
              else
                count = redis.call('HLEN', key) - redis.call('HEXISTS', key, OTHER)
              end
            end
            if count < bound then
              held[prefix] = count + 1
              updates[#updates + 1] = field
              updates[#updates + 1] = format('%d', hits)
            else
              held[prefix] = count
              over = over or {}
              over[prefix] = (over[prefix] or 0) + hits
            end
          end
        end
      end
      for c = 1, #updates, 2000 do
        redis.call('HSET', key, unpack(updates, c, math.min(c + 1999, #updates)))
      end
      if over then
        for prefix, hits in pairs(over) do
          redis.call('HINCRBY', key, prefix .. OTHER, format('%d', hits))
        end
      end
      if exp > 0 then
        redis.call('EXPIREAT', key, exp)
      end
    end
  end
end
-- Titles: the last one of each page, like its total without expiry.
local ntitles = tonumber(ARGV[a])
a = a + 1
if ntitles > 0 then
  local key = KEYS[k]
  k = k + 1
  for c = 0, ntitles - 1, 1000 do
    local len = math.min(1000, ntitles - c)
    redis.call('HSET', key, unpack(ARGV, a + 2 * c, a + 2 * (c + len) - 1))
  end
  a = a + 2 * ntitles
end
-- Rolling windows ('most read' in the last hour, day). Per window: a
-- hash per bucket ('<name>:<index>', page -> hits: 40% smaller than a
-- sorted set, and a bucket is only ever read whole), the window's sum
-- ('<name>:all', a sorted set) and the bucket it was last moved to
-- ('<name>:at').
-- Moving on by one bucket takes the bucket that left out of the sum;
-- after a longer pause the sum is rebuilt from the buckets still in the
-- window. A batch stamped before the window's bucket (another
-- instance's clock, a replay) counts in the window's bucket. Keys are
-- named here, under the site's hash tag, so in the batch's slot.
local function add_scores(key, first, n, hits)
  for c = 0, n - 1, 1000 do
    local len = math.min(1000, n - c)
    local m = first + c
    local scores = redis.call('ZMSCORE', key, unpack(ARGV, m, m + len - 1))
    local scored = {}
    for i = 0, len - 1 do
      local was = tonumber(scores[i + 1]) or 0
      scored[2 * i + 1] = format('%d', was + hits[c + i + 1])
      scored[2 * i + 2] = ARGV[m + i]
    end
    redis.call('ZADD', key, unpack(scored))
  end
end
local function add_fields(key, first, n, hits)
  for c = 0, n - 1, 1000 do
    local len = math.min(1000, n - c)
    local m = first + c
    local held = redis.call('HMGET', key, unpack(ARGV, m, m + len - 1))
    local fields = {}
    for i = 0, len - 1 do
      fields[2 * i + 1] = ARGV[m + i]
      fields[2 * i + 2] = format('%d', (tonumber(held[i + 1]) or 0) + hits[c + i + 1])
    end
    redis.call('HSET', key, unpack(fields))
  end
end
local nwindows = tonumber(ARGV[a])
a = a + 1
for w = 1, nwindows do
  local name, width, count, at = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  a = a + 4
  local base = prefix .. name .. ':'
  local sum, mark_key = base .. 'all', base .. 'at'
  local mark = tonumber(redis.call('GET', mark_key))
  if mark and at < mark then
    at = mark
  end
  if mark and at == mark + 1 then
    local gone = base .. (at - count)
    local left = redis.call('HGETALL', gone)
    for c = 1, #left, 2000 do
      local members, minus = {}, {}
      for i = c, math.min(c + 1999, #left), 2 do
        members[#members + 1] = left[i]
        minus[#minus + 1] = -tonumber(left[i + 1])
      end
      local scores = redis.call('ZMSCORE', sum, unpack(members))
      local keep, drop = {}, {}
      for i = 1, #members do
        local now_hits = (tonumber(scores[i]) or 0) + minus[i]
        if now_hits > 0 then
          keep[#keep + 1] = format('%d', now_hits)
          keep[#keep + 1] = members[i]
        else
          drop[#drop + 1] = members[i]
        end
      end
      if #keep > 0 then
        redis.call('ZADD', sum, unpack(keep))
      end
      if #drop > 0 then
        redis.call('ZREM', sum, unpack(drop))
      end
    end
    redis.call('DEL', gone)
  elseif not mark or at > mark then
    -- The sum of the buckets still in the window.
    local summed, order = {}, {}
    for b = at - count + 1, at do
      local got = redis.call('HGETALL', base .. b)
      for i = 1, #got, 2 do
        local page = got[i]
        if not summed[page] then
          order[#order + 1] = page
          summed[page] = 0
        end
        summed[page] = summed[page] + tonumber(got[i + 1])
      end
    end
    redis.call('DEL', sum)
    for c = 1, #order, 1000 do
      local scored = {}
      for i = c, math.min(c + 999, #order) do
        scored[#scored + 1] = format('%d', summed[order[i]])
        scored[#scored + 1] = order[i]
      end
      redis.call('ZADD', sum, unpack(scored))
    end
  end
  local bucket = base .. at
  for _, t in ipairs(totals) do
    add_fields(bucket, t[1], t[2], t[3])
    add_scores(sum, t[1], t[2], t[3])
  end
  -- A bucket lives until it has left the window (and one more, for a
  -- late move); the sum and the mark as long as the last bucket.
  redis.call('EXPIREAT', bucket, (at + count + 2) * width)
  redis.call('SET', mark_key, at, 'EXAT', (at + count + 1) * width)
  if redis.call('EXISTS', sum) == 1 then
    redis.call('EXPIREAT', sum, (at + count + 1) * width)
  end
end
while a <= #ARGV do
  local key = KEYS[k]
  k = k + 1
  local kind, exp = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  local fresh = not (exp > 0 and exp <= now)
  if kind == 'm' then
    local count = tonumber(ARGV[a])
    a = a + 1
    if fresh and count > 0 then
      redis.call('PFADD', key, unpack(ARGV, a, a + count - 1))
    end
    a = a + count
  else
    if fresh then
      redis.call('SET', KEYS[3], ARGV[a])
      redis.call('PFMERGE', key, key, KEYS[3])
      redis.call('DEL', KEYS[3])
    end
    a = a + 1
  end
  if fresh and exp > 0 then
    redis.call('EXPIREAT', key, exp)
  end
end
-- ---- record day (issue 25 §7) ----
-- The most hits on one local day and that day, raised from the day
-- counters as they stand after this batch; a tie keeps the earlier date.
local record = KEYS[#KEYS]
local kept = redis.call('HMGET', record, 'hits', 'date')
local best_hits, best_day = tonumber(kept[1]) or 0, kept[2]
local raised = false
for key, day in pairs(record_days) do
  local hits = tonumber(redis.call('GET', key)) or 0
  if hits > best_hits or (hits == best_hits and hits > 0 and best_day and day < best_day) then
    best_hits, best_day, raised = hits, day, true
  end
end
if raised then
  redis.call('HSET', record, 'hits', format('%d', best_hits), 'date', best_day)
end
-- ---- end record day ----
return {1, late}
