"""The web dashboard under ``/ui``: queues, tasks, schedules, worker pools, triggers.

Served by ``eventix api`` beside the REST API (and alone by ``eventix
dashboard``), from the same process, context and data layer. Pages are rendered
on the server from the Jinja2 templates in ``templates/``; ``static/`` holds one
stylesheet and one small script (live refresh by polling, confirmations), both
shipped in the package: nothing is fetched from anywhere at run time.

- :mod:`.auth`: sign-in with the API's token, session cookies, CSRF, headers
- :mod:`.pages`: the routes, one per page and per action
- :mod:`.views`: formatting and the SVG charts
"""

from __future__ import annotations

from eventix_operator.api.ui.pages import add_ui

__all__ = ["add_ui"]
