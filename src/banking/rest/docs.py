"""Self-hosted API docs: Swagger UI at /docs and ReDoc at /redoc, no CDN, no inline code.

Both pages load only files served from this package (``static/``: the vendored Swagger UI 5 and
ReDoc 2 bundles, see ``static/NOTICE.md``, and our own start-up scripts), so they work offline
and under the service's ``Content-Security-Policy: default-src 'self'``, which forbids inline
scripts and any other origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
ASSETS_URL = "/docs-assets/static"

_SWAGGER_UI_HTML = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Banking API - docs</title>
  <link rel="stylesheet" href="{ASSETS_URL}/swagger-ui/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS_URL}/swagger-ui/swagger-ui-bundle.js"></script>
  <script src="{ASSETS_URL}/docs-init.js"></script>
</body>
</html>
"""

_REDOC_HTML = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Banking API - reference</title>
</head>
<body>
  <div id="redoc"></div>
  <script src="{ASSETS_URL}/redoc/redoc.standalone.js"></script>
  <script src="{ASSETS_URL}/redoc-init.js"></script>
</body>
</html>
"""


def install_docs(app: FastAPI) -> None:
    """Mount the assets and add ``GET /docs`` and ``GET /redoc`` (not in the OpenAPI document)."""
    app.mount(ASSETS_URL, StaticFiles(directory=STATIC_DIR), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(_SWAGGER_UI_HTML)

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return HTMLResponse(_REDOC_HTML)
