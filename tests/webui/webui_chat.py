"""What a user does in Open WebUI's chat page, and what they see, as Playwright steps.

Every check reads what the page shows; the chat as Open WebUI stored it (its own API, with the
session's token) says in addition whether Open WebUI recorded an error for a message, which is
what it draws as the grey error box in place of an answer.
"""
import re
import time
import urllib.request

from playwright.sync_api import expect

# One answer of the demo model is at most 96 tokens at 16.7 tokens/s (6 s), but Open WebUI's
# background requests (title, tags, follow-up suggestions) queue on the same NPU before and
# after it, and this machine is shared: "eventually" means minutes here, never a speed check.
ANSWER_TIMEOUT_MS = 240_000


class ChatError(AssertionError):
    """The chat shows an error where an answer should be."""


class Chat:
    def __init__(self, page, base_url, screenshots, name):
        self.page = page
        self.base = base_url
        self.screenshots = screenshots
        self.name = name

    def shot(self, step):
        self.page.screenshot(path=str(self.screenshots / f"{self.name}-{step}.png"), full_page=True)

    def choose_model(self, model_id):
        self.page.locator("#model-selector-model-button").click()
        self.page.get_by_role("option", name=f"Select {model_id} model", exact=True).click()
        expect(self.page.locator("#model-selector-model-button")).to_have_attribute(
            "aria-label", f"Selected model: {model_id}")

    def send(self, text):
        before = self.page.locator(".chat-assistant").count()
        box = self.page.locator("#chat-input")
        box.click()
        self.page.keyboard.type(text)
        self.page.keyboard.press("Enter")
        expect(self.page.locator(".chat-assistant")).to_have_count(before + 1)
        return before

    def _stop_button(self):
        return self.page.get_by_role("button", name="Stop", exact=True)

    def _last_answer(self):
        return self.page.locator(".chat-assistant").last

    def _last_answer_item(self):
        """The last answer with its action buttons (Copy, Regenerate, ...), which Open WebUI adds
        once the answer has ended, error or not."""
        return self.page.locator("[role=listitem]").filter(has=self.page.locator(".chat-assistant")).last

    def _answer_text(self):
        prose = self._last_answer().locator(".markdown-prose")
        return prose.inner_text().strip() if prose.count() else ""

    def wait_answer(self, step):
        """Waits for the answer being written to end; returns its text. Fails when the chat shows an
        error, a notification of one, or no answer text."""
        expect(self._last_answer_item().get_by_role("button", name="Copy", exact=True)).to_be_attached(
            timeout=ANSWER_TIMEOUT_MS)
        expect(self._stop_button()).to_be_hidden(timeout=ANSWER_TIMEOUT_MS)
        self.shot(step)
        self.check_no_error()
        text = self._answer_text()
        if not text:
            raise ChatError(f"{self.name}: no answer text appeared; the message shows "
                            f"{self._last_answer().inner_text().strip()!r}")
        return text

    def wait_first_text(self):
        """Waits for the answer being written to show its first words, the Stop button still up."""
        deadline = time.monotonic() + ANSWER_TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            self.check_no_error()
            if self._answer_text():
                return
            if not self._stop_button().is_visible():
                raise ChatError(f"{self.name}: the answer ended with no text; the message shows "
                                f"{self._last_answer().inner_text().strip()!r}")
            time.sleep(0.25)
        raise ChatError(f"{self.name}: no answer text in {ANSWER_TIMEOUT_MS // 1000} s")

    def press_stop(self):
        self._stop_button().click()
        expect(self._stop_button()).to_be_hidden(timeout=ANSWER_TIMEOUT_MS)

    def check_no_error(self):
        toasts = self.page.locator('[data-sonner-toast][data-type="error"]')
        if toasts.count():
            raise ChatError(f"{self.name}: Open WebUI shows an error notification: "
                            f"{toasts.first.inner_text().strip()!r}")
        for message in self.stored_messages():
            if message.get("error"):
                raise ChatError(f"{self.name}: the chat shows an error instead of an answer: "
                                f"{message['error'].get('content', message['error'])!r}")

    def stored_messages(self):
        """The chat's messages as Open WebUI keeps them (none before the chat has an id)."""
        found = re.search(r"/c/([0-9a-f-]+)", self.page.url)
        if not found:
            return []
        token = self.page.evaluate("() => localStorage.token")
        response = self.page.request.get(f"{self.base}/api/v1/chats/{found.group(1)}",
                                         headers={"Authorization": f"Bearer {token}"})
        assert response.ok, f"GET /api/v1/chats/{found.group(1)}: {response.status}"
        return list(response.json()["chat"]["history"]["messages"].values())

    def answers_shown(self):
        return [a.inner_text().strip() for a in self.page.locator(".chat-assistant .markdown-prose").all()]


def rkllmd_aborts(base):
    """rkllmd's count of aborted generations, from its /metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("rkllmd_aborts_total "):
                return int(float(line.split()[1]))
    raise AssertionError("rkllmd's /metrics has no rkllmd_aborts_total")
