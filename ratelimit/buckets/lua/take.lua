-- Take hits from every bucket of one request, all or nothing, in one round trip.
--
-- KEYS[i]: bucket i (all keys share one hash tag, so the request is one Cluster slot).
-- ARGV, 7 per bucket: algorithm (1 token bucket / GCRA, 2 fixed window), limit, window_ms,
--   burst, hits, enforce (1: a refusal keeps the other buckets uncharged), charge rule
--   (0: all or nothing; 1: charged even when refused, as envoyproxy/ratelimit counts fixed
--   windows; 2: its STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT: the first bucket of the request
--   that goes over is charged, every other one is spared).
-- Returns 4 integers per bucket: allowed (0/1), remaining, reset_ms, retry_ms (-1: never).
-- A key holding something this script did not write (wrong type, unparsable value) fails the
-- call with the error "SIDEGATE_BADKEY <i>" before anything is written: that request fails,
-- the other requests (and the other keys) are untouched.
--
-- Time comes from Redis TIME, never from clients. Same arithmetic as ratelimit/algorithms/.

local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now = now_s * 1000000 + tonumber(t[2])
local n = #KEYS
local plan = {}
local refused = false
local stop_over = nil

local function bad_key(i)
  return redis.error_reply('SIDEGATE_BADKEY ' .. i)
end

for i = 1, n do
  local a = (i - 1) * 7
  local alg = tonumber(ARGV[a + 1])
  local limit = tonumber(ARGV[a + 2])
  local window_ms = tonumber(ARGV[a + 3])
  local burst = tonumber(ARGV[a + 4])
  local hits = tonumber(ARGV[a + 5])
  local p = {alg = alg, hits = hits, charge = ARGV[a + 7]}
  if alg == 1 then
    -- stored as "<tat>:<interval>"; a changed interval (reload) converts the debt to the
    -- new rate so the tokens already used survive
    local step = 0
    if limit > 0 then step = math.max(math.floor(window_ms * 1000 / limit), 1) end
    local stored = redis.pcall('GET', KEYS[i])
    if type(stored) == 'table' and stored.err then return bad_key(i) end
    local base = now
    if stored then
      local sep = string.find(stored, ':', 1, true)
      if not sep then return bad_key(i) end
      local tat = tonumber(string.sub(stored, 1, sep - 1))
      local old_step = tonumber(string.sub(stored, sep + 1))
      if not tat or not old_step then return bad_key(i) end
      if tat > now then
        if old_step == step or old_step == 0 or step == 0 then
          base = tat
        else
          base = now + math.floor((tat - now) * step / old_step)
        end
      end
    end
    local ahead = base - now
    p.step = step
    if limit <= 0 or burst <= 0 then
      p.allowed = hits == 0
      p.remaining, p.reset, p.left, p.ahead = 0, ahead, 0, ahead
      if hits == 0 then p.retry = 0 else p.retry = -1 end
      p.new = base
    else
      local tau = step * burst
      local left = math.floor((tau - ahead) / step)
      if left < 0 then left = 0 end
      local new = base + hits * step
      p.left, p.ahead = left, ahead
      if new - now <= tau then
        p.allowed, p.new = true, new
        p.remaining = math.floor((tau - (new - now)) / step)
        p.reset, p.retry = new - now, 0
      else
        p.allowed, p.new, p.remaining, p.reset = false, base, left, ahead
        if step > tau then
          p.retry = -1
        else
          p.retry = base + step - tau - now
          if p.retry < 0 then p.retry = 0 end
        end
      end
    end
  else
    local window_s = window_ms / 1000
    local start = now_s - (now_s % window_s)
    local stored = redis.pcall('HMGET', KEYS[i], 'w', 'c')
    if stored.err then return bad_key(i) end
    local count = 0
    if stored[1] or stored[2] then
      if not tonumber(stored[1]) or not tonumber(stored[2]) then return bad_key(i) end
    end
    if tonumber(stored[1]) == start then count = tonumber(stored[2]) end
    local after = count + hits
    p.start, p.window_s, p.after = start, window_s, after
    p.allowed = after <= limit
    if p.allowed then p.remaining = limit - after else p.remaining = 0 end
    p.left = limit - count
    if p.left < 0 then p.left = 0 end
    p.reset_s = start + window_s - now_s
  end
  if ARGV[a + 6] == '1' and not p.allowed then refused = true end
  if p.charge == '2' and not p.allowed and not stop_over then stop_over = i end
  plan[i] = p
end

local out = {}
for i = 1, n do
  local p = plan[i]
  local commit
  if p.charge == '1' then
    commit = true
  elseif p.charge == '2' then
    commit = (stop_over == i) or (not stop_over and not refused)
  else
    commit = p.allowed and not refused
  end
  if p.alg == 1 then
    local remaining, reset = p.remaining, p.reset
    if commit and p.allowed and p.hits > 0 then
      redis.call('SET', KEYS[i], string.format('%d:%d', p.new, p.step), 'PX',
                 math.max(math.ceil((p.new - now) / 1000), 1))
    elseif p.allowed and not commit then
      remaining, reset = p.left, p.ahead
    end
    local retry = p.retry
    if retry > 0 then retry = math.ceil(retry / 1000) end
    out[#out + 1] = p.allowed and 1 or 0
    out[#out + 1] = remaining
    out[#out + 1] = math.ceil(reset / 1000)
    out[#out + 1] = retry
  else
    local remaining = p.remaining
    if commit and p.hits > 0 then
      redis.call('HSET', KEYS[i], 'w', p.start, 'c', p.after)
      redis.call('PEXPIREAT', KEYS[i], (p.start + p.window_s) * 1000)
    elseif p.allowed and not commit then
      remaining = p.left
    end
    out[#out + 1] = p.allowed and 1 or 0
    out[#out + 1] = remaining
    out[#out + 1] = p.reset_s * 1000
    if p.allowed then out[#out + 1] = 0 else out[#out + 1] = p.reset_s * 1000 end
  end
end
return out
