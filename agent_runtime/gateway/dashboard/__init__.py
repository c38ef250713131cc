"""The dashboard (a placeholder page; the real dashboard replaces this package)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>agent-runtime</title></head>
<body><main><h1>agent-runtime gateway</h1>
<p>The API is under <a href="/v1/docs">/v1/docs</a>.</p>
<form method="post" action="/login"><label>Token <input type="password" name="token"
 autocomplete="off" required></label> <button type="submit">Log in</button></form>
</main></body></html>
"""


@router.get("/", response_class=HTMLResponse)
async def index() -> HTMLResponse:
    return HTMLResponse(_PAGE)
