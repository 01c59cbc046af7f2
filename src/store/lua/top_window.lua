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
-- last batch; sum the live ones.
local args = {#KEYS - 2}
for i = 3, #KEYS do
  args[#args + 1] = KEYS[i]
end
args[#args + 1] = 'WITHSCORES'
local got = redis.call('ZUNION', unpack(args))
local out = {}
for i = #got - 1, math.max(1, #got - 2 * limit + 1), -2 do
  out[#out + 1] = got[i]
  out[#out + 1] = got[i + 1]
end
return out
