"""``openmrt serve``: the browser instrument (an ASGI app, a WebSocket per player, a static page)."""
