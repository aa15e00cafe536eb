"""The web app's pages in Debian's headless chromium, driven by Python playwright with
executable_path (no downloaded browser): each page loads with no console error, no failed request and
no CSP violation, values from the chain are shown escaped, and the Inbox rows carry what a signing
script hooks onto. A screenshot of every page is saved in the test's tmp directory."""

from __future__ import annotations

from urllib.parse import urlencode

from support import ENV, unique
from conftest import Server

HOSTILE = '<img src=x onerror="document.title=1">&<script>alert(1)</script>'


def test_every_page_loads_clean_in_chromium(dn, browser, tmp_path):
    service = unique()
    digest = dn.release(service)
    deployer = dn.ledger("deployer")
    deployment = deployer.start_deployment(digest, service, ENV, 100)
    deployer.complete(deployment)
    waiting = dn.register(service, "2.0.0")
    dn.ledger("responder").open_incident(service, ENV, 3, HOSTILE)
    srv = Server(dn)
    pages = {
        "inbox": "/inbox",
        "inbox-approver": "/inbox?" + urlencode({"approver": dn.address("approver", 0)}),
        "artifact": f"/artifacts/{digest}?service={service}",
        "history": "/history",
        "history-filtered": "/history?" + urlencode({"service": service, "kind": "deployed"}),
        "status-list": "/status",
        "governance": "/governance",
        "status": f"/status/{service}/{ENV}",
        "compliance": "/compliance",
    }
    problems = []
    try:
        context = browser.new_context()
        page = context.new_page()
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
        for name, path in pages.items():
            response = page.goto(srv.url + path, wait_until="networkidle")
            assert response.status == 200, (name, response.status)
            page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
            assert page.title().endswith("shipledger"), name
        # the incident title is shown as text, never run (the title would be "1")
        page.goto(srv.url + f"/status/{service}/{ENV}", wait_until="networkidle")
        assert HOSTILE in page.inner_text("main")
        assert page.title() != "1"
        # the Inbox: one row per release waiting for votes, ready for a signing script
        page.goto(srv.url + "/inbox?" + urlencode({"approver": dn.address("approver", 0)}), wait_until="networkidle")
        row = page.locator(f'tr.release[data-digest="{waiting}"]')
        assert row.count() == 1
        assert row.get_attribute("data-service") == service and row.get_attribute("data-environment") == ENV
        assert row.locator("td.sign[data-sign]").count() == 1
        assert page.locator('meta[name="shipledger-chain-id"]').get_attribute("content") == str(dn.info["chain_id"])
        # History: the export link downloads the same file the API streams
        page.goto(srv.url + "/history?" + urlencode({"service": service}), wait_until="networkidle")
        with page.expect_download() as download:
            page.click("text=Export JSONL")
        saved = tmp_path / "history.jsonl"
        download.value.save_as(saved)
        assert saved.read_bytes() == srv.get("/v1/export?" + urlencode({"format": "jsonl", "service": service})).body
        assert saved.read_bytes().count(b"\n") == len(dn.history(service))
        context.close()
    finally:
        srv.stop()
    assert problems == []
