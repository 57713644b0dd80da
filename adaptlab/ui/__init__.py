"""``adaptlab ui``: a web workbench over data, compare, report, registry, playground and feedback.

Server-rendered pages (FastAPI + Jinja2, like the server) with a little plain JavaScript for what
must be live or interactive: the compare's progress (server-sent events), the report's charts and
constraints, the playground. Every script and style ships in ``static/``; no CDN, no network.
The run folder is the state of a compare and the registry is the state of everything else, so the
UI process can restart at any time. See :func:`adaptlab.ui.app.create_ui`.
"""

from adaptlab.ui.app import create_ui

__all__ = ["create_ui"]
