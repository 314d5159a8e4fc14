-- Cache a freshly fetched CRM token and release the refresh lock if this caller still owns it.
-- KEYS[1] token, KEYS[2] refresh lock
-- ARGV: owner id, token, cache ttl ms (0: too short-lived to cache, only release)
-- The token is written even if the lock expired meanwhile: it is valid, and a later holder
-- simply overwrites it with another valid one. Returns 1 if the lock was released.
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', tonumber(ARGV[3]))
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
