-- One look at a tenant's CRM token: the cached token, else the refresh lock, else "wait".
-- KEYS[1] token (string, expires ahead of the vendor's expiry)
-- KEYS[2] refresh lock (string: owner id, PX ttl; a dead holder's lock expires on its own)
-- KEYS[3] attention flag (string: fingerprint of a credential the vendor refused)
-- ARGV: owner id, lock ttl ms
-- Returns {3, fingerprint} when the credential needs attention (no token may be fetched),
-- {1, token} when one is cached, {2} when this caller now holds the lock and must fetch,
-- {0} when another caller holds it (poll again).
local flagged = redis.call('GET', KEYS[3])
if flagged then
  return {3, flagged}
end
local token = redis.call('GET', KEYS[1])
if token then
  return {1, token}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) then
  return {2}
end
return {0}
