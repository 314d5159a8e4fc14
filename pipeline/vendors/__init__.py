"""One small client per vendor, on one shared base (`base.VendorClient`).

Clients make exactly one HTTP request per method and raise classified `VendorError`s; the
resilience around them (breaker, bulkhead, retries, stats) is applied by whoever calls them,
through `pipeline.resilience.guard` — never inside a client.
"""
