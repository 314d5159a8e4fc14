"""The web API: enqueue runs, read them, watch and force breakers, check dependencies.

    pipeline api --port 8080           # pipeline.api.server.serve(host, port)

One module per idea: `app` builds the application; `server` holds every uvicorn setting;
`correlation` (the request's id, its log line, the last-resort 500), `limits` (body size
and time) and `errors` (the one error body) are the cross-cutting middleware; `inputs`
the types every route takes from outside, `bodies` JSON bodies parsed off the event loop,
`responses` what each operation documents; `auth` turns an API key into a caller; and each
resource has its router (`runs`, `dead_letters`, `breakers`, `health`, `metrics`).
"""

from pipeline.api.app import create_app

__all__ = ["create_app"]
