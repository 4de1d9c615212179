-- Sums the label counts of bucket hashes, group by group, inside Redis: a 24 h chart of 60 s buckets reads
-- 1,440 hashes, and one call that returns 3 numbers per step costs a fraction of 1,440 HMGET replies.
-- Read-only. Keys are computed in Python (worker/counts.py: CountStore._bucket_counts).
--
-- KEYS      bucket count hashes, group after group
-- ARGV[i]   how many of KEYS belong to group i, in order
-- Returns   {negative_1, neutral_1, positive_1, negative_2, ...}, one triple per group
local out, k = {}, 1
for g = 1, #ARGV do
  local n = tonumber(ARGV[g])
  if not n or n < 0 or k + n - 1 > #KEYS then return redis.error_reply('ERR counts_read: bad group size') end
  local neg, neu, pos = 0, 0, 0
  for _ = 1, n do
    local v = redis.call('HMGET', KEYS[k], 'negative', 'neutral', 'positive')
    neg = neg + (tonumber(v[1]) or 0)
    neu = neu + (tonumber(v[2]) or 0)
    pos = pos + (tonumber(v[3]) or 0)
    k = k + 1
  end
  out[#out + 1] = neg
  out[#out + 1] = neu
  out[#out + 1] = pos
end
return out
