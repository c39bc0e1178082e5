"""The ``src`` of every ``<img>`` in an HTML page, for the explanation-report tests."""

from __future__ import annotations

from html.parser import HTMLParser


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.src: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "img":
            self.src.append(dict(attrs)["src"])


def image_sources(html: str) -> list[str]:
    parser = _Images()
    parser.feed(html)
    return parser.src
