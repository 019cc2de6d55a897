"""pytest fixtures for the Open WebUI end-to-end test: rkllmd with the demo model on TCP, Open
WebUI from PyPI pointed at it, Debian's Chromium driven by Playwright, and the first admin account
created through the sign-up page as a user does.

Run it with scripts/webui-e2e, which installs all of this; RKLLMD_BIN must name the daemon.
RKLLMD_WEBUI_OUT is where screenshots and logs go (the artifact to keep);
RKLLMD_WEBUI_FUNCTION_CALLING=legacy switches the user's "Function Calling" setting to Legacy
before chatting (a check of the harness; the default, Open WebUI's own, is left untouched).
"""
import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "clients"))

from daemon import Daemon  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402
from webui_server import OpenWebUI  # noqa: E402

DEMO_MODEL = "vendor/rkllm-sim/models/demo.rkllm"
CHROMIUM = "/usr/bin/chromium"
# This machine's network is closed: without the background-networking switches Chromium keeps
# trying Google's hosts. The rest make a clean headless start as root.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FUNCTION_CALLING_MODES = ("default", "legacy")


def pytest_configure(config):
    binary = os.environ.get("RKLLMD_BIN")
    if not binary or not os.access(binary, os.X_OK):
        raise pytest.UsageError(f"RKLLMD_BIN must point at a built rkllmd binary (got {binary!r})")
    if not os.access(CHROMIUM, os.X_OK):
        raise pytest.UsageError(f"{CHROMIUM} is missing: apt-get install chromium")
    mode = os.environ.get("RKLLMD_WEBUI_FUNCTION_CALLING", "default")
    if mode not in FUNCTION_CALLING_MODES:
        raise pytest.UsageError(
            f"RKLLMD_WEBUI_FUNCTION_CALLING={mode!r}: use one of {FUNCTION_CALLING_MODES}")


def pytest_report_header(config):
    mode = os.environ.get("RKLLMD_WEBUI_FUNCTION_CALLING", "default")
    return f"rkllmd: {os.environ.get('RKLLMD_BIN')}; Open WebUI function calling: {mode}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def out_dir():
    path = pathlib.Path(os.environ.get("RKLLMD_WEBUI_OUT", REPO / "target" / "webui-e2e"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def rkllmd(out_dir):
    with open(out_dir / "rkllmd.log", "wb") as log:
        d = Daemon(model=DEMO_MODEL, log=log)
        yield d
        d.stop()


@pytest.fixture(scope="session")
def webui(rkllmd, out_dir, tmp_path_factory):
    server = OpenWebUI(rkllmd.base, str(tmp_path_factory.mktemp("open-webui")), out_dir / "open-webui.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def new_context(browser, **kwargs):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **kwargs)
    context.set_default_timeout(60_000)
    return context


@pytest.fixture(scope="session")
def signed_in(browser, webui, out_dir, tmp_path_factory):
    """The browser state of the first admin, who signed up on a fresh Open WebUI's welcome page
    (and, with RKLLMD_WEBUI_FUNCTION_CALLING=legacy, chose Legacy function calling in Settings)."""
    context = new_context(browser)
    page = context.new_page()
    try:
        page.goto(webui.url)
        page.get_by_role("button", name="Get started").click()
        page.get_by_placeholder("Enter Your Full Name").fill("Board Owner")
        page.get_by_placeholder("Enter Your Email").fill("owner@example.com")
        page.get_by_placeholder("Enter Your Password").fill("a long enough password")
        page.get_by_role("button", name="Create Admin Account").click()
        # A new account is shown the release notes once.
        page.get_by_role("button", name="Okay, Let's Go!").click()
        expect(page.locator("div[role=dialog]")).to_have_count(0)
        expect(page.locator("#chat-input")).to_be_visible()
        page.screenshot(path=str(out_dir / "signed-in.png"))
        if os.environ.get("RKLLMD_WEBUI_FUNCTION_CALLING", "default") == "legacy":
            choose_legacy_function_calling(page, out_dir)
        state = tmp_path_factory.mktemp("browser") / "state.json"
        context.storage_state(path=str(state))
    except Exception:
        page.screenshot(path=str(out_dir / "sign-up-failed.png"), full_page=True)
        raise
    finally:
        context.close()
    return state


def choose_legacy_function_calling(page, out_dir):
    """Settings > General > Advanced Parameters > Function Calling: Default -> Native -> Legacy."""
    page.get_by_role("button", name="User menu").click()
    page.get_by_text("Settings", exact=True).first.click()
    page.get_by_text("Advanced Parameters").first.locator("..").get_by_role("button").first.click()
    control = page.get_by_label("Function Calling", exact=True)
    for _ in range(3):
        if control.inner_text().strip() == "Legacy":
            break
        control.click()
    expect(control).to_have_text("Legacy")
    page.screenshot(path=str(out_dir / "settings-legacy-function-calling.png"))
    saved = "/api/v1/users/user/settings/update"
    with page.expect_response(lambda r: saved in r.url and r.ok):
        page.get_by_role("button", name="Save", exact=True).click()


@pytest.fixture
def page(request, browser, signed_in, webui, out_dir):
    context = new_context(browser, storage_state=str(signed_in))
    page = context.new_page()
    page.goto(webui.url)
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        page.screenshot(path=str(out_dir / f"{request.node.name}-failed.png"), full_page=True)
    context.close()
