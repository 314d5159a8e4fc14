-- A vendor answered the pair 429: hold every caller back and cut the allowed rate (AIMD's MD).
-- KEYS[1] the pair's breaker hash (pacing fields: see pace_acquire.lua)
-- ARGV: now_ms, sent_ms (when the throttled call was let go), hold_ms (Retry-After + jitter),
--       ceiling_per_s, decrease, floor_per_s
-- The first 429 starts pacing at ceiling x decrease. One cut per window: a call let go before
-- the last cut went out at the old rate, so its 429 only extends the hold.
-- Returns the rate now allowed, as a string.
local h = redis.call('HMGET', KEYS[1], 'pr', 'pu', 'pd')
local now, sent = tonumber(ARGV[1]), tonumber(ARGV[2])
local ceiling, decrease, floor = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local rate = tonumber(h[1])
local cut_at = tonumber(h[3]) or 0
if not rate then
  rate = math.max(floor, ceiling * decrease)
  cut_at = now
elseif sent >= cut_at then
  rate = math.max(floor, rate * decrease)
  cut_at = now
end
local hold = math.max(tonumber(h[2]) or 0, now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'pr', rate, 'pu', hold, 'pd', cut_at)
return tostring(rate)
