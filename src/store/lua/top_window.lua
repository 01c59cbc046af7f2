-- The most read pages of a rolling window.
-- KEYS[1] the window's mark ('…:at'), KEYS[2] its sum ('…:all'), then
-- its live buckets, oldest first (indices at - count + 1 .. at).
-- ARGV[1] the reader's bucket index, ARGV[2] the bucket count, ARGV[3]
-- the limit. Replies page, hits pairs (in no set order).
local at, count, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local mark = tonumber(redis.call('GET', KEYS[1]))
if not mark or at - mark >= count then
  -- Every bucket with hits has left the window.
  return {}
end
if at - mark <= 1 then
  -- Moved on by the last flush (or by the one due within the interval).
  return redis.call('ZRANGE', KEYS[2], 0, limit - 1, 'REV', 'WITHSCORES')
end
-- A quiet site: its sum still holds buckets that have left since its
-- last batch; sum the live ones (hashes, page -> hits).
local summed, order = {}, {}
for k = 3, #KEYS do
  local got = redis.call('HGETALL', KEYS[k])
  for i = 1, #got, 2 do
    local page = got[i]
    if not summed[page] then
      order[#order + 1] = page
      summed[page] = 0
    end
    summed[page] = summed[page] + tonumber(got[i + 1])
  end
end
table.sort(order, function(x, y)
  if summed[x] ~= summed[y] then
    return summed[x] > summed[y]
  end
  return x < y
end)
local out = {}
for i = 1, math.min(limit, #order) do
  out[#out + 1] = order[i]
  out[#out + 1] = string.format('%d', summed[order[i]])
end
return out
