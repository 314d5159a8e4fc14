-- Take one slot of a vendor's bulkhead if fewer than `limit` are held (across all workers).
-- KEYS[1] slots (zset: slot id -> expiry ms; a dead worker's slot expires on its own)
-- ARGV: now_ms, slot_ttl_ms, limit, slot_id
-- Returns 1 when the slot was taken, 0 when the bulkhead is full.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[4])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 2)
  return 1
end
return 0
