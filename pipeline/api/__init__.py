"""The web API: enqueue runs, read them, watch and force breakers, check dependencies.

    pipeline api --port 8080           # or: uvicorn --factory pipeline.api:create_app

One module per idea: `app` builds the application, `correlation` and `errors` are the
cross-cutting middleware (correlation ids, the one error body), `auth` turns an API key
into a caller, and each resource has its router (`runs`, `breakers`, `health`); a new
resource (dead letters, metrics) is one more router included by `app`.
"""

from pipeline.api.app import create_app

__all__ = ["create_app"]
