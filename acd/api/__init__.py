"""The HTTP API of a node: an ASGI app served by Hypercorn's Trio worker (see `app.py`)."""

from .app import Api, build_app

__all__ = ["Api", "build_app"]
