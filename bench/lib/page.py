"""What a bench client reads off the app's page to send a message, as a browser would: the composer
form's action (which names the conversation) and its CSRF token."""

from __future__ import annotations

import re

ACTION = re.compile(r'<form id="composer"[^>]*action="([^"]+)"')
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def composer_form(html: str) -> tuple[str, str]:
    """(form action, csrf token) of the page's composer; AttributeError if the page has none."""
    return ACTION.search(html).group(1), CSRF.search(html).group(1)
