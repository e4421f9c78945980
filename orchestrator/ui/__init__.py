"""The operator web UI, served by ``saga-api`` under ``/ui``: server-rendered pages
(Jinja2, a little htmx served from here) over the same operator functions as the API and
the CLI. Nothing is fetched from the internet and nothing needs a build step: htmx 2.0.4
is vendored as ``static/htmx.min.js`` (0BSD licence beside it)."""

from orchestrator.ui.app import PREFIX, install_ui
from orchestrator.ui.auth import ReadRule, api_read_rule

__all__ = ["PREFIX", "ReadRule", "api_read_rule", "install_ui"]
