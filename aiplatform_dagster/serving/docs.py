"""The API's interactive documentation, served from the package rather than a CDN.

FastAPI's default ``/docs`` page loads Swagger UI from cdn.jsdelivr.net, which air-gapped
clusters (and these test machines) cannot reach; the page is then blank. Swagger UI 5 (OpenAPI
3.1, what FastAPI writes) ships in ``swagger-ui-bundle-v2`` and is served from ``/docs/assets``.
"""

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs/assets"


def serve_docs(app: FastAPI) -> None:
    """``GET /docs``: Swagger UI over ``app``'s OpenAPI schema, with no outside request."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )
