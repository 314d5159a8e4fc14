-- Delete KEYS[1] only if it still holds ARGV[1]: release a lock we own, drop the token the
-- CRM just refused (not the fresh one another worker already cached), clear an attention
-- flag set for the credential we read. Returns 1 if deleted.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
