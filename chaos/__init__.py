"""The chaos suite (`make chaos`): the pipeline on a private stack, under faults.

Not collected by pytest (`testpaths = ["tests"]`): it starts its own redis-server, Postgres
cluster, simulator, worker and beat, breaks them on purpose, and measures what is lost,
duplicated or stuck. See `chaos.run`.
"""
