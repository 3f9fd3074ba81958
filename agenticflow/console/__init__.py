"""The web console (``agenticflow console``; on by default in ``agenticflow
dev``): a page served by the gateway to find, watch, understand and steer
workflows and see the cluster, in a browser.

:mod:`agenticflow.gateway.sessions` exchanges a gateway token for a session cookie with a CSRF
token; :mod:`.app` serves the page (``static/``: plain ES modules and CSS,
shipped built) with a strict Content Security Policy. The page reads and
steers through the gateway's JSON routes, so every action passes the same
RBAC as the CLI's, as the logged-in principal.
"""
