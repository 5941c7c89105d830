"""Checking what a person sent before it is stored or sent to the model.

Plain code rather than a validation library: there is one text field and two hidden ones, and
the rules (UTF-8, control characters, length) fit in a few lines that say exactly what they do.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from werkzeug.datastructures import MultiDict

from ..errors import Refused

# Control characters other than tab and newline (carriage returns are folded into newlines first):
# invisible, and NUL in particular breaks tools downstream.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
FORM_TYPE = "application/x-www-form-urlencoded"


class InvalidMessage(Refused):
    """The message cannot be sent as it is."""


def parse_form(body: bytes, content_type: str) -> MultiDict[str, str]:
    """A url-encoded form, decoded strictly: text that is not UTF-8 is refused, not mangled."""
    if content_type != FORM_TYPE:
        raise InvalidMessage("Please send the message with the page's form.", status=415)
    try:
        return MultiDict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict",
                                   max_num_fields=20))
    except UnicodeDecodeError:
        raise InvalidMessage("Your message could not be read: it is not valid UTF-8 text.") from None
    except ValueError:
        raise InvalidMessage("That form had more fields than this page sends.") from None


def normalize(raw: str | None) -> str:
    """Line endings made `\\n`, control characters removed: the text as it would be stored."""
    return _CONTROL.sub("", (raw or "").replace("\r\n", "\n").replace("\r", "\n"))


def clean_message(raw: str | None, *, max_chars: int) -> str:
    """`normalize`d, outer whitespace trimmed, length checked."""
    text = normalize(raw).strip()
    if not text:
        raise InvalidMessage("Please type a message before sending.")
    if len(text) > max_chars:
        raise InvalidMessage(
            f"Your message is {len(text):,} characters long; the limit is {max_chars:,}. "
            "Shorten it and send it again."
        )
    return text
