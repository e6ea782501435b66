"""One email's parts tracked together are tracked as each alone would be."""

from __future__ import annotations

from nurture.mail.tracking import read_click, track, track_email, track_text

BASE = "https://t.example.com"
SECRET = "s3cret"

HTML = """<html><body>
<p><a href="https://example.com/a">A</a> and <a class="x" href='https://example.com/b?x=1&amp;y=2'>B</a>
<a href="https://example.com/a">A again</a> <a href="mailto:sam@example.com">mail</a>
<a href="https://t.example.com/u/token">Unsubscribe</a> <a href="HTTP://Example.com/C">C</a></p>
</body></html>"""
TEXT = """See https://example.com/a, and https://example.com/b?x=1&y=2.
Not https://example.com/ab, xhttps://example.com/a nor (https://example.com/a)
HTTP://Example.com/C https://example.com/a
https://t.example.com/u/token
"""


def test_track_email_is_track_and_track_text() -> None:
    for html, text in [(HTML, TEXT), ("<p>no links</p>", TEXT), (HTML, ""), ("", "")]:
        body, links = track(html, base_url=BASE, secret=SECRET, tracking_id="t1")
        expected = track_text(text, links, base_url=BASE, secret=SECRET, tracking_id="t1")
        assert track_email(html, text, base_url=BASE, secret=SECRET, tracking_id="t1") == (
            body, expected, links
        )


def test_each_link_s_token_names_its_position() -> None:
    _, text, links = track_email(HTML, TEXT, base_url=BASE, secret=SECRET, tracking_id="t1")
    assert links[:3] == ["https://example.com/a", "https://example.com/b?x=1&y=2",
                         "https://example.com/a"]  # fmt: skip
    tokens = [word.split("/c/")[1].rstrip(".,)") for word in text.split() if "/c/" in word]
    assert [read_click(SECRET, token) for token in tokens] == [
        ("t1", 0), ("t1", 1), ("t1", 3), ("t1", 0)
    ]
