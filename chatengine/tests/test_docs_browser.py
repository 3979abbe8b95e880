"""The documentation pages in a real browser: headless Chromium (Debian's `chromium`) opens
Swagger UI and Redoc on the live server; every tag's operations render, no request fails and
none leaves the live server. Screenshots go to test-artifacts/.

Skips when /usr/bin/chromium is absent; .ci/run installs it so CI always runs this.
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from drf_spectacular.generators import SchemaGenerator

from conversations.tests.test_admin_browser import LAUNCH_ARGS

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"needs Chromium at {CHROMIUM} (apt-get install -y chromium; .ci/run does it)",
)


def _operations() -> list[tuple[str, str, str, str]]:
    """(tag, operationId, summary, METHOD path) of every operation in the schema."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return [
        (op["tags"][0], op["operationId"], op["summary"], f"{method.upper()} {path}")
        for path, methods in schema["paths"].items()
        for method, op in methods.items()
    ]


@pytest.fixture
def browser_page(live_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 2000})
        page.traffic = {"requests": [], "failed": [], "errors": []}
        page.on("request", lambda r: page.traffic["requests"].append(r.url))
        page.on("requestfailed", lambda r: page.traffic["failed"].append((r.url, r.failure)))
        page.on(
            "response",
            lambda r: r.status >= 400 and page.traffic["errors"].append((r.url, r.status)),
        )
        try:
            yield page
        finally:
            browser.close()


def _assert_clean_traffic(page, live_server) -> None:
    traffic = page.traffic
    assert traffic["requests"], "the page made no request at all"
    assert traffic["failed"] == []
    assert traffic["errors"] == []
    live = urlsplit(live_server.url).netloc
    foreign = [url for url in traffic["requests"] if urlsplit(url).netloc not in ("", live)]
    assert foreign == [], "the docs must not load anything from another host"


def test_swagger_ui_renders_every_tag_and_operation_from_local_assets(browser_page, live_server):
    page = browser_page
    operations = _operations()
    page.goto(f"{live_server.url}/api/docs/", wait_until="networkidle")
    page.wait_for_selector(".opblock-tag-section", timeout=20_000)

    tags = {tag for tag, *_ in operations}
    assert tags == {
        "sessions",
        "messages",
        "replies",
        "search",
        "usage",
        "tokens",
        "openai",
        "health",
    }
    for tag in sorted(tags):
        assert page.locator(f'.opblock-tag[data-tag="{tag}"]').count() == 1, tag
    for tag, operation_id, summary, label in operations:
        block = page.locator(f"#operations-{tag}-{operation_id}")
        assert block.count() == 1, f"{label} is not rendered under {tag}"
        assert summary in block.inner_text(), label
    # The Bearer scheme is offered for "Authorize".
    assert page.locator(".btn.authorize").count() == 1

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "swagger-ui.png"), full_page=True)
    _assert_clean_traffic(page, live_server)


def test_redoc_renders_every_operation_from_local_assets(browser_page, live_server):
    page = browser_page
    operations = _operations()
    page.goto(f"{live_server.url}/api/redoc/", wait_until="networkidle")
    page.wait_for_selector("[data-section-id^='tag/']", timeout=20_000)

    text = page.inner_text("body")
    for _, _, summary, label in operations:
        assert summary in text, f"{label} is not rendered"

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "redoc.png"))
    _assert_clean_traffic(page, live_server)
