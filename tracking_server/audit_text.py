"""User-supplied text in the audit's text line, made unforgeable.

Model and alias names, user names and paths come from the request, and refused (even
anonymous) attempts are audited: a name holding a newline and ``allowed set_alias ... by
promoter`` would otherwise write a forged line of its own. Plain names (letters, digits and
``._-@:/+``) stay as they are, so the usual line reads as before; anything else is JSON-quoted,
which escapes newlines, quotes and control characters. The JSON log format carries the raw value
in its own field.
"""

from __future__ import annotations

import json
import re

PLAIN = re.compile(r"^[A-Za-z0-9._@:/+-]+$")


def quoted(text: str | None) -> str:
    """``text`` as it may appear in one audit line: plain, or JSON-quoted; ``-`` for None."""
    if text is None:
        return "-"
    if PLAIN.match(text):
        return text
    return json.dumps(text, ensure_ascii=True)
