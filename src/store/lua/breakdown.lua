-- KEYS[1..n] the scope's day counters, KEYS[n+1..2n] its breakdown hashes
-- of the same days. ARGV[1] kind ('c' site counter | 'z' page sorted set),
-- ARGV[2] page, ARGV[3] the dimension's field prefix ('' in a site hash).
-- Returns the days' hits, then each value and its hits summed over the
-- days, all read in one snapshot.
local format = string.format
local n = #KEYS / 2
local hits = 0
for i = 1, n do
  local v
  if ARGV[1] == 'z' then
    v = redis.call('ZSCORE', KEYS[i], ARGV[2])
  else
    v = redis.call('GET', KEYS[i])
  end
  hits = hits + (tonumber(v) or 0)
end
local prefix = ARGV[3]
local len = #prefix
local sums, order = {}, {}
for i = n + 1, 2 * n do
  local all = redis.call('HGETALL', KEYS[i])
  for j = 1, #all, 2 do
    local field = all[j]
    if len == 0 or field:sub(1, len) == prefix then
      local value = field:sub(len + 1)
      if not sums[value] then
        order[#order + 1] = value
        sums[value] = 0
      end
      sums[value] = sums[value] + tonumber(all[j + 1])
    end
  end
end
local out = {format('%d', hits)}
for _, value in ipairs(order) do
  out[#out + 1] = value
  out[#out + 1] = format('%d', sums[value])
end
return out
