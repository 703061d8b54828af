"""The console's model card is the signed card opened by the release's status as of the request."""

from __future__ import annotations

import html
import re
from typing import Any

from console_world import CLINICIAN, NOW, REVIEWER, console_client, sign_in


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_approved_release_card_shows_approved_as_of_the_console_clock(
    world: dict[str, Any],
) -> None:
    client = console_client(world["ws"])
    assert sign_in(client, CLINICIAN).status_code == 303
    r = client.get(f"/console/models/{world['v1']}/card")
    assert r.status_code == 200, r.text[:400]
    assert r.headers["cache-control"] == "no-store"
    text = _text(r.text)
    assert f"Status as of {NOW:%Y-%m-%d %H:%M} UTC" in text
    assert re.search(r"Status\s+approved\b", text), text[:800]
    assert "awaiting" not in text.lower()
    assert text.index("Status as of") < text.index("Key metrics") < text.index("Appendix")

    # the release page links to it and says the card carries its status as of now
    assert sign_in(client, REVIEWER).status_code == 303
    page = client.get(f"/console/releases/{world['v1']}")
    assert page.status_code == 200
    assert f"/console/models/{world['v1']}/card" in page.text
    assert "status and approvals as of now" in page.text

    # a release still waiting for gate 4 says so, not "approved"
    waiting = _text(client.get(f"/console/models/{world['v2']}/card").text)
    assert re.search(r"Status\s+clinically reviewed\b", waiting), waiting[:800]
