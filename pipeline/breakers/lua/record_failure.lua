-- Count one failure that the breaker must see; open when the threshold is met.
-- KEYS[1] breaker hash, KEYS[2] probe leases
-- ARGV: now_ms, generation seen at admit, error_threshold, exempt (0/1), probe_id ('' if none)
-- Returns {state_after, from_state} (from_state '' when nothing changed)
local h = redis.call('HMGET', KEYS[1], 's', 'g')
local state = h[1] or 'closed'
local gen = tonumber(h[2]) or 0
if ARGV[5] ~= '' then redis.call('ZREM', KEYS[2], ARGV[5]) end
-- An outcome from an older generation (the breaker moved on meanwhile) changes nothing.
if tonumber(ARGV[2]) ~= gen then return {state, ''} end
if state == 'closed' then
  local failures = redis.call('HINCRBY', KEYS[1], 'f', 1)
  if ARGV[4] == '0' and failures >= tonumber(ARGV[3]) then
    redis.call('HSET', KEYS[1], 's', 'open', 'at', ARGV[1], 'ok', 0, 'g', gen + 1)
    return {'open', 'closed'}
  end
  return {'closed', ''}
end
if state == 'half-open' and ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 's', 'open', 'at', ARGV[1], 'ok', 0, 'g', gen + 1)
  redis.call('DEL', KEYS[2])
  return {'open', 'half-open'}
end
return {state, ''}
