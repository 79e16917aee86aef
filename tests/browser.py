"""The HTML pages opened in a real browser: the system's headless Chromium (`make browser` installs it),
driven by Playwright. What a reader's browser would see: console errors, every request the page makes,
what is at the top of the first screen, and a screenshot."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

VIEWPORT = {"width": 1400, "height": 900}


@dataclass
class PageView:
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    requests: list[str] = field(default_factory=list)  # every URL the page asked for, itself included
    first_section: str | None = None  # id of the first <section> in document order
    first_section_top: float | None = None  # its distance from the top of the page, in CSS pixels
    rendered_figures: int = 0  # vega-embed containers that finished drawing
    screenshot_colours: int = 0  # distinct grey levels in the first screen (1 = blank)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "no chromium on PATH: `make browser` installs it (the HTML pages are tested in a real browser)"
    return path


def open_page(page_file: Path, screenshot: Path, expect_figures: int = 0) -> PageView:
    from PIL import Image
    from playwright.sync_api import sync_playwright

    view = PageView()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("console", lambda m: view.errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: view.errors.append(str(e)))
            page.on("request", lambda r: view.requests.append(r.url))
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            if expect_figures:  # vega draws after load; vega-embed marks a finished container
                page.wait_for_function(f"document.querySelectorAll('.vega-embed').length >= {expect_figures}")
            view.rendered_figures = page.evaluate("document.querySelectorAll('.vega-embed').length")
            first = page.evaluate(
                "() => { const s = document.querySelector('section');"
                " return s ? [s.id, s.getBoundingClientRect().top + window.scrollY] : null }"
            )
            if first:
                view.first_section, view.first_section_top = first
            page.screenshot(path=str(screenshot))
        finally:
            browser.close()
    view.screenshot_colours = len(Image.open(screenshot).convert("L").getcolors(256) or [])
    return view
