"""Self-hosted API docs: Swagger UI served from the installed package, no CDN, no inline code."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

STATIC_DIR = Path(__file__).parent / "static"

_DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Banking API - docs</title>
  <link rel="stylesheet" href="/docs-assets/swagger-ui/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs-assets/swagger-ui/swagger-ui-bundle.js"></script>
  <script src="/docs-assets/static/docs-init.js"></script>
</body>
</html>
"""


def install_docs(app: FastAPI) -> None:
    app.mount("/docs-assets/swagger-ui", StaticFiles(directory=swagger_ui_path), name="swagger-ui")
    app.mount("/docs-assets/static", StaticFiles(directory=STATIC_DIR), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(_DOCS_HTML)
