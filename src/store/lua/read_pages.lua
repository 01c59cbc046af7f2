
-- KEYS[1] watermarks, KEYS[2..] the periods' page sorted sets.
-- ARGV[1] producer, ARGV[2..] pages. Returns the watermark, then for each
-- period the score of each page in order ('0' for none). One ZMSCORE
-- (Redis 6.2+) per period.
local out = {redis.call('HGET', KEYS[1], ARGV[1]) or '0'}
for i = 2, #KEYS do
  local scores = redis.call('ZMSCORE', KEYS[i], unpack(ARGV, 2, #ARGV))
  for j = 1, #ARGV - 1 do
    out[#out + 1] = scores[j] or '0'
  end
end
return out
