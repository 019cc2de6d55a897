"""Open WebUI (from PyPI, default settings) in a headless Chromium, against rkllmd serving the
demo model with its 4,096-token context, as a user: choose the model, a first message and its
answer, a follow-up and its answer, then a long answer stopped with the Stop button; over the
Ollama connection and over the OpenAI one. Screenshots of every step go to RKLLMD_WEBUI_OUT.
"""
import time

import pytest
from webui_chat import ANSWER_TIMEOUT_MS, Chat, rkllmd_aborts

# Open WebUI lists each rkllmd model once per connection: the Ollama API's name carries a tag.
CONNECTIONS = {"ollama": "demo:latest", "openai": "demo"}


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_first_answer_and_follow_up(page, webui, out_dir, connection):
    chat = Chat(page, webui.url, out_dir, f"{connection}-chat")
    chat.choose_model(CONNECTIONS[connection])
    chat.shot("1-model-chosen")

    chat.send("Hello! What can you do on this board?")
    first = chat.wait_answer("2-first-answer")

    chat.send("Tell me more about that, please.")
    second = chat.wait_answer("3-follow-up-answer")

    assert chat.answers_shown() == [first, second]
    stored = [m for m in chat.stored_messages() if m["role"] == "assistant"]
    assert [m["content"].strip() for m in stored] == [first, second], \
        "the chat Open WebUI stored differs from the answers it showed"
    assert all(m.get("model") == CONNECTIONS[connection] for m in stored)


@pytest.mark.parametrize("connection", CONNECTIONS)
def test_stop_a_long_answer(page, webui, rkllmd, out_dir, connection):
    chat = Chat(page, webui.url, out_dir, f"{connection}-stop")
    chat.choose_model(CONNECTIONS[connection])
    aborts_before = rkllmd_aborts(rkllmd.base)

    chat.send("Write a long story about a river and a mountain.")
    chat.wait_first_text()
    chat.shot("1-writing")
    chat.press_stop()
    chat.shot("2-stopped")
    chat.check_no_error()
    shown = chat.answers_shown()
    assert len(shown) == 1 and shown[0], f"the stopped answer shows no text: {shown!r}"

    # The Stop button must reach the NPU: Open WebUI drops its request, and rkllmd aborts the run.
    deadline = time.monotonic() + ANSWER_TIMEOUT_MS / 1000
    while rkllmd_aborts(rkllmd.base) == aborts_before:
        assert time.monotonic() < deadline, "rkllmd never aborted the stopped generation"
        time.sleep(0.5)
