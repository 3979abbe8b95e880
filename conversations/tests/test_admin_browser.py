"""A real browser (headless Chromium via Playwright) against a live server: a support person logs
in, finds a session by a phrase in it, and reads its transcript. The screenshot is kept in
test-artifacts/ for a human to look at."""

from pathlib import Path

import pytest

from conversations import services
from conversations.tests.factories import ChatSessionFactory, UserFactory

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"needs Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)",
    ),
    pytest.mark.django_db(transaction=True),
]

CONVERSATION = [
    ("user", "Hi! My parcel ORDER-4471 never arrived."),
    ("assistant", "Sorry to hear that. Let me look up ORDER-4471."),
    ("tool", '{"status": "lost in transit"}'),
    ("assistant", "It was lost in transit; I have started a refund."),
    ("user", "<script>alert('pwned')</script> thanks!"),
]


def _seed_session():
    from django.contrib.auth.models import Permission

    staff = UserFactory(username="support", is_staff=True)
    staff.user_permissions.set(
        Permission.objects.filter(codename__in=["view_chatsession", "view_message"])
    )
    session = ChatSessionFactory(
        title="Lost parcel",
        system_prompt="You are a patient support agent.",
        metadata={"ticket": "SUP-88", "channel": "web"},
        model="gpt-4o-mini",
    )
    for role, content in CONVERSATION:
        fields = {}
        if role == "assistant":
            fields = {
                "model": "gpt-4o-mini",
                "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
                "finish_reason": "stop",
                "latency_ms": 640,
            }
        if role == "tool":
            fields = {"tool_call_id": "call_track_1"}
        services.append_message(
            session=session, role=role, content=content, token_count=len(content) // 4, **fields
        )
    return staff, session


def test_support_staff_finds_a_session_by_phrase_and_reads_its_transcript_in_order(live_server):
    from playwright.sync_api import sync_playwright

    # All database work happens before Playwright starts its event loop in this thread.
    _seed_session()
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "admin-transcript.png"
    dialogs = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(f"{live_server.url}/admin/login/?next=/admin/conversations/chatsession/")
            page.fill("#id_username", "support")
            page.fill("#id_password", "pw-for-tests")
            page.click("input[type=submit]")
            page.wait_for_selector("#searchbar")

            page.fill("#searchbar", "order-4471")
            page.press("#searchbar", "Enter")
            page.wait_for_selector("#result_list")
            page.screenshot(path=str(ARTIFACTS / "admin-session-search.png"))
            page.click("#result_list a:text('Lost parcel')")
            page.wait_for_selector("#transcript li.ce-msg")

            seqs = page.eval_on_selector_all(
                "#transcript li.ce-msg", "items => items.map(li => Number(li.dataset.seq))"
            )
            roles = page.eval_on_selector_all(
                "#transcript li.ce-msg", "items => items.map(li => li.dataset.role)"
            )
            contents = page.eval_on_selector_all(
                "#transcript .ce-content", "items => items.map(el => el.textContent)"
            )
            prompt_visible = page.get_by_text("You are a patient support agent.").is_visible()
            usage_shown = page.locator("#msg-2 .ce-reply").inner_text()
            page.locator("#transcript").scroll_into_view_if_needed()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()

    assert seqs == [1, 2, 3, 4, 5]
    assert roles == [role for role, _ in CONVERSATION]
    assert contents == [content for _, content in CONVERSATION]
    assert prompt_visible
    assert "gpt-4o-mini" in usage_shown
    assert "640 ms" in usage_shown
    assert dialogs == []  # the <script> in a message was shown as text, never run
    assert screenshot.stat().st_size > 10_000
