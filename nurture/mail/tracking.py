"""Tracking links in emails, and telling a person's engagement from a machine's.

Every tracked email gets a random ``tracking_id``. Its links are rewritten to
``{base}/c/{token}`` where the signed token names the email and the link's position in
it, so the server can only ever redirect to a URL that was in that email. The open
pixel is ``{base}/o/{token}.gif``. All of this is pure: the server checks the tokens.
"""

from __future__ import annotations

import functools
import html
import ipaddress
import re
from datetime import datetime, timedelta

from nurture.tokens import sign, verify

OPEN_PURPOSE = "open"
CLICK_PURPOSE = "click"
#: Opens or clicks this soon after delivery are a scanner's.
TOO_SOON = timedelta(seconds=10)
#: Other links of the same email clicked this recently: a scanner following them all.
LINK_BURST = timedelta(seconds=5)

_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_SCANNERS = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|scanner|barracuda|proofpoint|mimecast|symantec|"
    r"trend ?micro|forcepoint|sophos|fortinet|ironport|safelinks|python-|curl/|wget/|"
    r"go-http-client|java/|okhttp|headless|phantomjs|libwww|httpclient|urlscan",
    re.IGNORECASE,
)
#: Apple's Mail Privacy Protection fetches every image from Apple's network.
_PRIVACY_PROXIES = (ipaddress.ip_network("17.0.0.0/8"),)


def open_url(base_url: str, secret: str, tracking_id: str) -> str:
    return f"{base_url}/o/{sign(secret, OPEN_PURPOSE, tracking_id)}.gif"


def click_url(base_url: str, secret: str, tracking_id: str, index: int) -> str:
    return f"{base_url}/c/{sign(secret, CLICK_PURPOSE, f'{tracking_id}:{index}')}"


def read_open(secret: str, token: str) -> str | None:
    """The tracking id an open-pixel token names, or ``None`` if it is not genuine."""
    return verify(secret, OPEN_PURPOSE, token.removesuffix(".gif"))


def read_click(secret: str, token: str) -> tuple[str, int] | None:
    """``(tracking id, link index)`` of a genuine click token, else ``None``."""
    payload = verify(secret, CLICK_PURPOSE, token)
    if payload is None:
        return None
    tracking_id, _, index = payload.rpartition(":")
    return (tracking_id, int(index)) if index.isdigit() else None


def track(body: str, *, base_url: str, secret: str, tracking_id: str) -> tuple[str, list[str]]:
    """*body* with its web links rewritten to click-tracking URLs and an open pixel added;
    and the original URLs, in order. The unsubscribe link and ``mailto:`` stay as they are."""
    body, links, _ = _track_html(body, base_url, secret, tracking_id)
    return body, links


def track_email(
    html_body: str, text: str, *, base_url: str, secret: str, tracking_id: str
) -> tuple[str, str, list[str]]:
    """One email's HTML part as :func:`track` tracks it and its plain-text part as
    :func:`track_text` does, each link's token signed once for both; and the original
    URLs, in order."""
    body, links, tracked = _track_html(html_body, base_url, secret, tracking_id)
    return body, _track_text(text, links, tracked), links


def _track_html(
    body: str, base_url: str, secret: str, tracking_id: str
) -> tuple[str, list[str], list[str]]:
    """:func:`track`'s body and links, and each link's click-tracking URL."""
    links: list[str] = []
    tracked_urls: list[str] = []

    def rewrite(match: re.Match[str]) -> str:
        url = html.unescape(match.group(3)).strip()
        if not url.lower().startswith(("http://", "https://")) or url.startswith(f"{base_url}/u/"):
            return match.group(0)
        links.append(url)
        tracked = click_url(base_url, secret, tracking_id, len(links) - 1)
        tracked_urls.append(tracked)
        quote = match.group(2)
        return f"{match.group(1)}{quote}{html.escape(tracked)}{quote}"

    body = _HREF.sub(rewrite, body)
    pixel = (
        f'<img src="{html.escape(open_url(base_url, secret, tracking_id))}" width="1" '
        'height="1" alt="" style="display:block;border:0;width:1px;height:1px">'
    )
    found = list(_BODY_END.finditer(body))
    if found:
        end = found[-1].start()
        body = body[:end] + pixel + body[end:]
    else:
        body += pixel
    return body, links, tracked_urls


def track_text(text: str, links: list[str], *, base_url: str, secret: str, tracking_id: str) -> str:
    """The plain-text part with the same click tracking as the HTML part: each of *links*
    (the HTML part's tracked URLs, in order) standing as a whole word becomes its
    tracked URL."""
    tracked = [click_url(base_url, secret, tracking_id, n) for n in range(len(links))]
    return _track_text(text, links, tracked)


def _track_text(text: str, links: list[str], tracked: list[str]) -> str:
    """*text* with each of *links* standing as a whole word replaced by its *tracked* URL
    (the first, for a URL that is in *links* twice)."""
    index = {url: n for n, url in reversed(list(enumerate(links)))}
    if not index:
        return text
    return _words(tuple(sorted(index, key=len, reverse=True))).sub(
        lambda m: tracked[index[m.group(1)]], text
    )


@functools.lru_cache(maxsize=256)
def _words(urls: tuple[str, ...]) -> re.Pattern[str]:
    """The expression that finds any of *urls* standing as a whole word (a template's
    links are the same in each of its emails)."""
    words = "|".join(re.escape(url) for url in urls)
    return re.compile(rf"(?<!\S)({words})(?=$|[\s.,;:!?)\]>])", re.M)


def machine_reason(
    *,
    method: str,
    user_agent: str,
    ip: str,
    sent_at: datetime | None,
    now: datetime,
    other_links_just_clicked: int = 0,
) -> str | None:
    """Why an open or click looks like a machine's (a scanner, a privacy proxy), or
    ``None`` if it looks like the lead's own."""
    if method.upper() == "HEAD":
        return "HEAD request"
    if not user_agent.strip():
        return "no user agent"
    if _SCANNERS.search(user_agent):
        return "scanner user agent"
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        address = None
    if address is not None and any(address in net for net in _PRIVACY_PROXIES):
        return "mail privacy proxy"
    if sent_at is not None and timedelta(0) <= now - sent_at < TOO_SOON:
        return "within seconds of delivery"
    if other_links_just_clicked:
        return "several links clicked at once"
    return None
