-- Applies one batch of sentiment tallies atomically together with the per-partition offset watermarks,
-- so a redelivered batch never counts twice. Keys and expiry times are computed in Python
-- (worker/counts.py: pack_apply); this script only checks, compares and writes.
--
-- KEYS[1]       watermarks hash (field "<topic>:<partition>" -> next offset not yet counted)
-- KEYS[2..n]    bucket count hashes, then mood hashes and mood "recent" lists, then the mood index
-- ARGV[1]       JSON: {wm = {{field, next_offset}, ...},
--                      t  = {{wm_index, offset, label, {key_index, ...}, mood_index (0 = none), score}, ...},
--                      kx = {[key_index as string] = expire_at_ms, ...},
--                      m  = {{conversation_id, hash_key_index, list_key_index}, ...},
--                      ms = mood_size, a = ewma_alpha, ttl = mood_ttl_ms, now = now_ms, ch = channel,
--                      th = mood label threshold, mi = mood index key_index (0 = no moods), mx = index size}
-- Returns the number of tallies applied (not already counted).
--
-- A mood hash holds `label` (from the score: <= -th negative, >= th positive, else neutral) and `last_label`
-- (the latest message's). Hashes written before last_label existed held the latest label in `label`; the
-- first update rewrites both fields, so such a hash is converted in place and keeps its counts.
--
-- Redis does not roll back a script that fails after a write, so every check happens before the first write.

local ok, p = pcall(cjson.decode, ARGV[1])
if not ok or type(p) ~= 'table' then return redis.error_reply('ERR counts: ARGV[1] is not JSON') end

local function bad(what) return redis.error_reply('ERR counts: bad ' .. what) end
local function int(v, lo) return type(v) == 'number' and v == math.floor(v) and v >= lo and v < 2^53 end
local function key_index(v, first) return int(v, first) and v <= #KEYS end
local LABELS = {negative = true, neutral = true, positive = true}
local function mood_label(score)
  if score <= -p.th then return 'negative' elseif score >= p.th then return 'positive' end
  return 'neutral'
end

if type(p.wm) ~= 'table' or type(p.t) ~= 'table' or type(p.kx) ~= 'table' or type(p.m) ~= 'table' then
  return bad('payload')
end
if not int(p.ms, 1) or type(p.a) ~= 'number' or not (p.a > 0 and p.a <= 1) or not int(p.ttl, 1)
    or not int(p.now, 0) or type(p.ch) ~= 'string' or type(p.th) ~= 'number' or not (p.th > 0 and p.th <= 1)
    or not (p.mi == 0 and #p.m == 0 or key_index(p.mi, 2)) or not int(p.mx, 1) then
  return bad('settings')
end
for _, w in ipairs(p.wm) do
  if type(w) ~= 'table' or type(w[1]) ~= 'string' or not int(w[2], 0) then return bad('watermark') end
end
for k, at in pairs(p.kx) do
  if not key_index(tonumber(k), 2) or not int(at, 1) then return bad('expiry') end
end
for _, m in ipairs(p.m) do
  if type(m) ~= 'table' or type(m[1]) ~= 'string' or not key_index(m[2], 2) or not key_index(m[3], 2) then
    return bad('mood')
  end
end
for _, t in ipairs(p.t) do
  if type(t) ~= 'table' or not int(t[1], 1) or t[1] > #p.wm or not int(t[2], 0) or not LABELS[t[3]]
      or type(t[4]) ~= 'table' or not int(t[5], 0) or t[5] > #p.m
      or type(t[6]) ~= 'number' or not (t[6] >= -1 and t[6] <= 1) then
    return bad('tally')
  end
  for _, k in ipairs(t[4]) do
    if not key_index(k, 2) or p.kx[tostring(k)] == nil then return bad('tally key') end
  end
end

-- Reads only up to here.
local stored = {}
for i, w in ipairs(p.wm) do
  stored[i] = tonumber(redis.call('HGET', KEYS[1], w[1]) or '0') or 0
end

local applied, touched, moods = 0, {}, {}
for _, t in ipairs(p.t) do
  if t[2] >= stored[t[1]] then
    applied = applied + 1
    for _, k in ipairs(t[4]) do
      redis.call('HINCRBY', KEYS[k], t[3], 1)
      touched[k] = true
    end
    if t[5] > 0 then
      local m = p.m[t[5]]
      local h = KEYS[m[2]]
      local n = redis.call('HINCRBY', h, 'n', 1)
      local score = t[6]
      if n > 1 then
        local old = tonumber(redis.call('HGET', h, 'score') or '0') or 0
        score = old + p.a * (t[6] - old)
      end
      redis.call('HINCRBY', h, t[3], 1)
      redis.call('HSET', h, 'score', string.format('%.17g', score), 'label', mood_label(score),
                 'last_label', t[3], 'updated_ms', string.format('%d', p.now))
      redis.call('LPUSH', KEYS[m[3]], t[3])
      moods[t[5]] = {n = n, score = score, last_label = t[3]}
    end
  end
end

for k in pairs(touched) do
  redis.call('PEXPIREAT', KEYS[k], p.kx[tostring(k)])
end
local indexed = false
for i, m in ipairs(p.m) do
  local st = moods[i]
  if st then
    indexed = true
    redis.call('LTRIM', KEYS[m[3]], 0, p.ms - 1)
    redis.call('PEXPIRE', KEYS[m[2]], p.ttl)
    redis.call('PEXPIRE', KEYS[m[3]], p.ttl)
    redis.call('ZADD', KEYS[p.mi], p.now, m[1])
    redis.call('PUBLISH', p.ch, cjson.encode({conversation_id = m[1], label = mood_label(st.score),
                                              last_label = st.last_label, score = st.score, n = st.n,
                                              updated_ms = p.now}))
  end
end
if indexed then
  -- The index lists recently updated conversations for readers; it forgets those whose hash has expired
  -- and keeps the newest mx, so it stays small however many conversations there are.
  redis.call('ZREMRANGEBYSCORE', KEYS[p.mi], '-inf', string.format('(%d', p.now - p.ttl))
  redis.call('ZREMRANGEBYRANK', KEYS[p.mi], 0, -p.mx - 1)
  redis.call('PEXPIRE', KEYS[p.mi], p.ttl)
end
for i, w in ipairs(p.wm) do
  if w[2] > stored[i] then redis.call('HSET', KEYS[1], w[1], string.format('%d', w[2])) end
end
return applied
