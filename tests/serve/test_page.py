"""The chat page at `/`, driven in headless Chromium (Debian's, through Playwright): send a
message and watch the answer stream in, stop one, regenerate, edit and resend, rate an answer
with a comment, and find the rating in the server's database."""

import os
import shutil
import sqlite3

import pytest

from conftest import Server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Debian's chromium in a closed network, as root: without the background-networking flags it
# keeps trying to reach the outside (see the hints).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser_page(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=FLAGS)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def test_the_page_streams_stops_regenerates_edits_and_rates(serve_run, tmp_path, browser_page):
    from playwright.sync_api import expect

    db = tmp_path / "serve.sqlite"
    # long answers (up to 400 tokens) at a sampled temperature, so that Stop lands mid-stream
    server = Server(serve_run[0], db, "--max-new-tokens", "400", "--temperature", "1.0")
    page = browser_page
    try:
        page.goto(server.url + "/")
        expect(page.locator("#model")).to_have_text("serve")

        page.fill("#input", "Hello there!")
        page.click("#send")
        answer = page.locator(".msg.assistant").last
        expect(answer.locator(".text")).not_to_be_empty(timeout=60_000)  # text arrives while it streams
        expect(page.locator("#stop")).to_be_visible()
        page.click("#stop")
        expect(answer.locator(".note", has_text="stopped")).to_be_visible(timeout=30_000)
        stopped_text = answer.locator(".text").inner_text()

        page.click("text=Regenerate")
        expect(page.locator("#stop")).to_be_hidden(timeout=120_000)  # this one runs to its end
        regenerated = page.locator(".msg.assistant").last
        expect(regenerated.locator("button[data-rating=up]")).to_be_visible()

        regenerated.locator("button[data-rating=up]").click()
        regenerated.locator("input.comment").fill("nicely put")
        regenerated.locator("button.send-rating").click()
        expect(page.locator(".msg.assistant").last.locator(".note", has_text="rating saved")).to_be_visible()

        page.locator(".msg.user").first.locator("text=Edit").click()
        page.locator(".msg.user textarea").fill("Hello again!")
        page.locator(".msg.user").first.locator("text=Send").click()
        expect(page.locator(".msg.user .text")).to_have_text(["Hello again!"])
        expect(page.locator("#stop")).to_be_hidden(timeout=120_000)
        page.screenshot(path=str(tmp_path / "chat-page.png"), full_page=True)
        if os.environ.get("LOOM_SCREENSHOT"):
            shutil.copy(tmp_path / "chat-page.png", os.environ["LOOM_SCREENSHOT"])
    finally:
        server.stop()

    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT id, answer, finish_reason, client, request FROM completions "
                              "ORDER BY created").fetchall()
        ratings = conn.execute("SELECT completion_id, rating, comment FROM ratings").fetchall()
    assert [row[3] for row in stored] == ["page"] * 3
    assert stored[0][2] == "cancelled" and stopped_text[:20] in stored[0][1]
    assert stored[1][2] in ("stop", "length") and stored[1][4] == stored[0][4]  # the same prompt, answered again
    assert "Hello again!" in stored[2][4]
    assert ratings == [(stored[1][0], 1, "nicely put")]
