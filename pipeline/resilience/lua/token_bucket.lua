-- Take `n` tokens from a bucket refilled at `rate` per second up to `burst` (all workers share it).
-- KEYS[1] bucket hash (t = tokens, at = last refill ms)
-- ARGV: rate_per_s, burst, n
-- Time is Redis's own (TIME), so workers with skewed clocks share one honest bucket.
-- Returns 0 when the tokens were taken, else the ms to wait before they will be there.
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(h[1]) or burst
local at = tonumber(h[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local wait = 0
if tokens >= n then
  tokens = tokens - n
else
  wait = math.ceil((n - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
