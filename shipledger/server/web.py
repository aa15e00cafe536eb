"""The web app: server-rendered HTML pages over the same reads as the API (Inbox, Artifact, History,
Status, Governance, Compliance). The only script is this origin's /static/wallet.js (web/wallet.js
bundled with viem, on the Inbox and Governance pages); the Content-Security-Policy allows nothing
else, and every value from the chain or the request is escaped by `e()`.

The wallet script finds what it needs in the page: the suite's chain id, registry, governance
address, the RPC URL a wallet may add and the newest block's time (a Safe's vote is drafted at it), in
<meta> tags; on the Inbox the Safe panel (its address input, prefilled from ?approver=) and each
release is a `<tr class="release">` with `data-digest`, `data-service`, `data-environment`,
`data-version` and `data-ttl`, and an empty `<td class="sign" data-sign>` cell for its Approve and
Reject buttons; on the Governance page each proposal is a `<tr class="proposal">` with
`data-proposal-id`, `data-state`, `data-kind` and `data-change` and an empty `<td data-act>` cell.
"""

from __future__ import annotations

import datetime as dt
import html
from functools import lru_cache
from importlib import resources
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from shipledger.errors import ShipledgerError, gate_sentence

PAGES = (("Inbox", "/inbox"), ("History", "/history"), ("Status", "/status"), ("Governance", "/governance"),
         ("Compliance", "/compliance"))
STATIC_TYPES = {"app.css": "text/css", "favicon.svg": "image/svg+xml", "wallet.js": "text/javascript"}
# Where the wallet script writes: which wallet, what will be signed (hidden until asked), the outcome.
WALLET_PANEL = ('<div class="wallet" data-wallet-panel><p class="wallet-which">Looking for a browser wallet…</p>'
                '<div class="wallet-confirm" hidden></div><p class="wallet-message" role="status" aria-live="polite"></p></div>')
# The Inbox's Safe (ERC-1271) path: the wallet script adds "as Safe" buttons to each release and shows
# the drafted vote, the hash the Safe's owners sign and the field for their combined signature here.
SAFE_PANEL = ('<div class="wallet safe" data-safe-panel><h2>Vote as a Safe (ERC-1271)</h2><p>A Safe approver votes with its'
              " owners' combined signature: enter the Safe's address, press Approve as Safe or Reject as Safe on a release,"
              " have the owners sign the Safe message hash shown, then paste their signatures and relay the vote.</p>"
              '<label>Safe address <input data-safe-address value="{safe}" size="44" placeholder="0x…" autocomplete="off"'
              ' spellcheck="false"></label><div class="safe-vote" data-safe-vote hidden></div></div>')
HISTORY_FILTERS = ("service", "environment", "digest", "approver", "org", "kind", "since", "until")


def e(value) -> str:
    """Any value as HTML text or attribute content."""
    return html.escape("" if value is None else str(value), quote=True)


def when(timestamp) -> str:
    if not timestamp:
        return ""
    return dt.datetime.fromtimestamp(int(timestamp), dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def none_as(value, text: str = "n/a"):
    return text if value is None else value


def short(digest: str) -> str:
    return digest[:19] + "…" if digest and len(digest) > 19 else digest or ""


def layout(state, title: str, body: str, current: str = "", wallet: bool = False) -> str:
    """A page; `wallet`: it loads the wallet script, which finds the suite in the <meta> tags."""
    current_mark = ' aria-current="page"'
    nav = "".join(f'<a href="{href}"{current_mark if name == current else ""}>{name}</a>' for name, href in PAGES)
    book = state.config.book
    suite = {"chain-id": book["chain_id"], "registry": state.endpoint.registry,
             "governance": book["contracts"]["Governance"]["address"],
             "rpc-url": state.config.wallet_rpc_url or "", "head-time": state.head.timestamp or ""}
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        + "".join(f'<meta name="shipledger-{name}" content="{e(value)}">' for name, value in suite.items())
        + ('<script src="/static/wallet.js" defer></script>' if wallet else "")
        + f"<title>{e(title)} · shipledger</title><link rel=\"stylesheet\" href=\"/static/app.css\">"
        "<link rel=\"icon\" href=\"/static/favicon.svg\" type=\"image/svg+xml\"></head><body>"
        f"<header><strong>shipledger</strong><nav>{nav}</nav>"
        f"<span class=\"head\">block {e(state.head.number)} · indexed to {e(state.synced_block)}</span></header>"
        f"<main><h1>{e(title)}</h1>{body}</main></body></html>"
    )


def table(headers: list[str], rows: list[list[str]], row_attrs: list[str] | None = None,
          cell_attrs: list[str] | None = None) -> str:
    """rows hold HTML already escaped by the caller; row_attrs and cell_attrs (per column) too."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    cell_attrs = cell_attrs or [""] * len(headers)
    body = "".join(f"<tr{(row_attrs or [''] * len(rows))[i]}>" + "".join(f"<td{a}>{c}</td>" for a, c in zip(cell_attrs, row)) + "</tr>"
                   for i, row in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>" if rows else "<p class=\"empty\">Nothing here.</p>"


def gate_text(gate: dict) -> str:
    try:
        return "allowed" if gate["allowed"] else gate_sentence(gate["reason"], gate["details"])
    except (KeyError, IndexError, ValueError):
        return gate.get("reason", "")


def artifact_link(digest: str, service: str, text: str | None = None) -> str:
    return f'<a href="/artifacts/{e(digest)}?{e(urlencode({"service": service}))}">{e(text or short(digest))}</a>'


@lru_cache(maxsize=None)
def static_file(name: str) -> bytes:
    return resources.files("shipledger.server").joinpath("static", name).read_bytes()


def add_pages(app, st) -> None:
    from shipledger.server import api, votes

    def page(request: Request, title: str, body: str, current: str = "", status: int = 200, wallet: bool = False) -> HTMLResponse:
        return HTMLResponse(layout(st(request), title, body, current, wallet), status_code=status)

    def failed(request: Request, exc: ShipledgerError, current: str) -> HTMLResponse:
        code = api.status_of(exc)
        return page(request, "Cannot show this", f'<p class="error">{e(exc)}</p>', current, code)

    @app.get("/", include_in_schema=False)
    def home():
        return RedirectResponse("/inbox", status_code=303)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        if name not in STATIC_TYPES:
            return api.error_response(404, "NotFound", f"no static file {name}")
        return Response(static_file(name), media_type=STATIC_TYPES[name], headers={"Cache-Control": "max-age=300"})

    @app.get("/inbox", include_in_schema=False)
    def inbox(request: Request, approver: str = ""):
        from shipledger._internal.names import parse_address

        form = ('<form method="get" action="/inbox" class="filters"><label>Approver address '
                f'<input name="approver" value="{e(approver)}" size="44" placeholder="0x…"></label>'
                '<button type="submit">Show</button></form>')
        try:
            account = parse_address(approver, "approver") if approver.strip() else None
            block, waiting = st(request).waiting()
            live = live_versions(st(request), {(w["service"], w["environment"]) for w in waiting})
        except ShipledgerError as exc:
            return failed(request, exc, "Inbox")
        releases = votes.pending_for(waiting, account) if account else waiting
        rows, attrs = [], []
        for w in releases:
            t = w["tally"]
            tally = (f"{t['approvals']} of {e(t['threshold'])} approvals, {t['organisations']} of {e(t['min_organisations'])} orgs"
                     + (f", {t['rejections']} rejected" if t["rejections"] else "")
                     + (f"<br><small>first approval expires {e(when(t['expires_at']))}</small>" if t["expires_at"] else ""))
            now_live = live.get((w["service"], w["environment"]))
            rows.append([
                f"{e(w['service'])}<br><small>{e(w['environment'])}</small>",
                f"{artifact_link(w['digest'], w['service'], w['version'])}<br><small>{e(w['kind'])} <code>{e(short(w['digest']))}</code></small>",
                f"<code>{e(w['commit'][:12]) or '–'}</code><br><small>{e(when(w['committed_at']))}</small>"
                f"<br><small>by <code>{e(w['registrant'][:10])}</code></small>",
                f"<small>provenance <code>{e(short(w['provenance'])) or '–'}</code><br>sbom <code>{e(short(w['sbom'])) or '–'}</code></small>",
                tally, f'<span class="gate" data-reason="{e(w["gate"]["reason"])}">{e(gate_text(w["gate"]))}</span>',
                e(now_live or "nothing"), "",
            ])
            attrs.append(f' class="release" data-digest="{e(w["digest"])}" data-service="{e(w["service"])}"'
                         f' data-environment="{e(w["environment"])}" data-version="{e(w["version"])}" data-ttl="{e(t["ttl"])}"')
        html_rows = table(["Target", "Release", "Commit", "Documents", "Tally", "Gate", "Live now", ""], rows, attrs)
        html_rows = html_rows.replace("<td></td></tr>", '<td class="sign" data-sign></td></tr>')
        who = f"waiting for {e(account)}" if account else "waiting for votes"
        safe_panel = SAFE_PANEL.replace("{safe}", e(account or ""))
        return page(request, "Inbox", f"{form}{WALLET_PANEL}{safe_panel}<p>{len(releases)} release(s) {who} at block {e(block)}.</p>{html_rows}",
                    "Inbox", wallet=True)

    @app.get("/governance", include_in_schema=False)
    def governance(request: Request):
        try:
            block, found = st(request).proposals()
        except ShipledgerError as exc:
            return failed(request, exc, "Governance")
        rows, attrs = [], []
        for p in reversed(found):  # newest first
            change = ", ".join(f"{k} {v}" for k, v in p["change"].items())
            rows.append([e(p["proposal_id"]), e(p["kind"]), e(change), e(p["state"]), f'{e(p["approvals"])} of {e(p["needed"])}',
                         "not yet known" if p["weakening"] is None else ("yes: waits for the delay" if p["weakening"] else "no"),
                         e(when(p["executable_at"]) or "–"), ""])
            attrs.append(f' class="proposal" data-proposal-id="{e(p["proposal_id"])}" data-state="{e(p["state"])}"'
                         f' data-kind="{e(p["kind"])}" data-change="{e(change)}"')
        # the wallet script puts its buttons in the last cell, and the new state and approvals after a transaction
        html_rows = table(["#", "Kind", "Change", "State", "Approvals", "Weakening", "Executable at", ""], rows, attrs,
                          ["", "", "", ' class="state"', ' class="approvals"', "", "", ' class="act" data-act'])
        body = (f"{WALLET_PANEL}<p>{len(found)} proposal(s) at block {e(block)}. A steward approves or cancels with a transaction"
                " from their own wallet; the contract checks that the sender is a steward.</p>" + html_rows)
        return page(request, "Governance", body, "Governance", wallet=True)

    @app.get("/artifacts/{digest}", include_in_schema=False)
    def artifact(request: Request, digest: str, service: str = ""):
        try:
            data = api.trace_of(st(request), digest, service)
        except ShipledgerError as exc:
            return failed(request, exc, "")
        a = data["artifact"]
        facts = [("Service", e(a["service"])), ("Version", e(a["version"])), ("Kind", e(a["kind"])),
                 ("Digest", f"<code>{e(a['digest'])}</code>"),
                 ("Registrant", f"<code>{e(a['registrant'])}</code>"), ("Commit", f"<code>{e(a['commit']) or '–'}</code>"),
                 ("Committed at", e(when(a["committed_at"]) or "–")), ("Provenance", f"<code>{e(a['provenance']) or '–'}</code>"),
                 ("SBOM", f"<code>{e(a['sbom']) or '–'}</code>"), ("URI", e(a["uri"]) or "–"),
                 ("Revoked", "yes" if a["revoked"] else "no")]
        record = "<dl class=\"facts\">" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
        steps = "".join(
            f'<li class="step {e(s["kind"])}"><span class="when">{e(when(s["timestamp"]))} · block {e(s["block_number"])}</span>'
            f'<span class="kind">{e(s["kind"])}</span> <span class="env">{e(s["environment"])}</span>'
            f'<p>{e(s["summary"])}</p><small>tx <code>{e(s["tx_hash"])}</code></small></li>' for s in data["steps"])
        attestations = table(["Type", "Document", "URI", "Attestor", "When"],
                             [[e(t["type"]), f"<code>{e(short(t['document'])) or '–'}</code>", e(t["uri"]) or "–",
                               f"<code>{e(t['attestor'])}</code>", e(when(t["time"]))] for t in data["attestations"]])
        return page(request, f"{a['service']} {a['version']}", f"{record}<h2>Attestations</h2>{attestations}"
                    f"<h2>Chain of custody</h2><ol class=\"timeline\">{steps}</ol>")

    @app.get("/history", include_in_schema=False)
    def history(request: Request):
        q = request.query_params
        values = {k: q.get(k) or None for k in HISTORY_FILTERS if k != "kind"}
        kinds = [k for k in q.getlist("kind") if k] or None
        form = '<form method="get" action="/history" class="filters">' + "".join(
            f'<label>{e(k)} <input name="{e(k)}" value="{e(values[k] or "")}"></label>' for k in values) + \
            f'<label>kind <input name="kind" value="{e(",".join(kinds or []))}"></label><button type="submit">Filter</button></form>'
        if kinds and len(kinds) == 1 and "," in kinds[0]:
            kinds = [k.strip() for k in kinds[0].split(",") if k.strip()]
        try:
            answer = api.filtered_history(st(request).reader_db(), api.history_query(
                values["service"], values["environment"], values["digest"], values["approver"], values["org"], kinds,
                values["since"], values["until"]))
            after = api.parse_cursor(q.get("cursor") or None)
        except ShipledgerError as exc:
            return HTMLResponse(layout(st(request), "History", form + f'<p class="error">{e(exc)}</p>', "History"),
                                status_code=api.status_of(exc))
        from shipledger.cli.compliance import _summary

        events = [x for x in answer if after is None or (x.block_number, x.log_index) > after]
        page_events = events[: api.HISTORY_PAGE]
        rows = [[e(x.block_number), e(when(x.timestamp)), e(x.kind), e(x.service), e(x.environment), e(_summary(x)),
                 f"<code>{e(x.tx_hash[:18])}…</code>"] for x in page_events]
        filters = [(k, v) for k, v in values.items() if v] + [("kind", k) for k in kinds or []]
        links = [f'<a href="/v1/export?{e(urlencode([("format", f), *[(("environment" if k == "environment" else k), v) for k, v in filters]]))}"'
                 f' download>Export {f.upper()}</a>' for f in ("csv", "jsonl")]
        if len(events) > len(page_events):
            last = page_events[-1]
            links.append(f'<a rel="next" href="/history?{e(urlencode([*filters, ("cursor", f"{last.block_number}:{last.log_index}")]))}">Next page</a>')
        body = (form + f"<p>{len(answer)} event(s){', showing ' + str(len(page_events)) if len(events) != len(page_events) else ''}."
                f" <span class=\"links\">{' · '.join(links)}</span></p>"
                + table(["Block", "Time", "Kind", "Service", "Environment", "Summary", "Tx"], rows))
        return page(request, "History", body, "History")

    @app.get("/status", include_in_schema=False)
    def status_list(request: Request):
        targets = sorted(votes.policies(st(request).reader_db().db))
        rows = [[f'<a href="/status/{e(s)}/{e(env)}">{e(s)}</a>', e(env)] for s, env in targets]
        return page(request, "Status", table(["Service", "Environment"], rows), "Status")

    @app.get("/status/{service}/{environment}", include_in_schema=False)
    def status(request: Request, service: str, environment: str):
        try:
            data = api.status_of_target(st(request), service, environment)
        except ShipledgerError as exc:
            return failed(request, exc, "Status")

        def deployment(d):
            if not d:
                return "nothing"
            return (f"{artifact_link(d['digest'], service, d['version'] or short(d['digest']))} (deployment {e(d['id'])},"
                    f" {e(d['status'])} at {e(d['percent'])}%)")

        policy = data["policy"]
        db = st(request).reader_db().db
        titles = {i["id"]: (db.execute("SELECT title FROM incident_opened WHERE id = ?", (i["id"],)).fetchone() or [""])[0]
                  for i in data["open_incidents"]}  # the chain keeps no title, its event does
        facts = [("Live", deployment(data["live"])), ("Rolling", deployment(data["active"])),
                 ("Open incidents", ", ".join(f"#{e(i['id'])} severity {e(i['severity'])} {e(i['status'])}: {e(titles[i['id']])}"
                                              for i in data["open_incidents"]) or "none"),
                 ("Freeze", "frozen by an open incident" if any(
                     policy and policy.get("freeze_severity") and i["severity"] <= policy["freeze_severity"]
                     for i in data["open_incidents"]) else "none"),
                 ("Policy", f"version {e(policy['version'])}: {e(policy['threshold'])} approvals from {e(policy['min_organisations'])}"
                            f" organisations" if policy else "none (everything is denied)")]
        record = "<dl class=\"facts\">" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
        rows = [[artifact_link(p["digest"], service, p["version"]), "ready" if p["allowed"] else e(gate_text(p))]
                for p in data["pending_approvals"]]
        return page(request, f"{service} in {environment}", record + "<h2>Not yet deployed here</h2>" + table(["Release", "Gate"], rows),
                    "Status")

    @app.get("/compliance", include_in_schema=False)
    def compliance(request: Request):
        try:
            report = api.dora_of(st(request), None, None, None, None, None)
            audit = audit_summary(st(request))
        except ShipledgerError as exc:
            return failed(request, exc, "Compliance")
        rate = lambda v: "n/a" if v is None else f"{v:.0%}"  # noqa: E731
        numbers = [("Production deployments", e(report["deployments"])), ("Completed", e(report["completed"])),
                   ("Change failure rate", e(rate(report["change_failure_rate"]))),
                   ("Deployments per week", e(report["deployments_per_week"] if report["deployments_per_week"] is not None else "n/a")),
                   ("Median lead time (s)", e(none_as(report["lead_time"].get("median")))),
                   ("Median time to restore (s)", e(none_as(report["time_to_restore"].get("median")))),
                   ("Unresolved incidents", e(report["unresolved_incidents"]))]
        findings = table(["Rule", "Where", "Finding"], [[e(f["rule"]), e(f["deployment"] or f["address"] or f["block"]), e(f["message"])]
                                                         for f in audit["findings"]])
        charts = "".join(f'<figure><img src="/compliance/charts/{name}.svg" alt="{e(label)}"><figcaption>{e(label)}</figcaption></figure>'
                         for name, label in CHARTS)
        body = (f"<h2>Audit</h2><p>{e(audit['summary']['findings'])} finding(s); checked {e(audit['summary'].get('starts'))}"
                f" deployment starts, {e(audit['summary'].get('contracts_checked'))} contracts and"
                f" {e(audit['summary'].get('blocks_checked'))} blocks (a sample) at block {e(audit['block'])}.</p>{findings}"
                "<h2>DORA (production)</h2><dl class=\"facts\">" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in numbers)
                + f"</dl><div class=\"charts\">{charts}</div>")
        return page(request, "Compliance", body, "Compliance")

    @app.get("/compliance/charts/{name}.svg", include_in_schema=False)
    def chart(request: Request, name: str):
        from shipledger.compliance import dora, report

        makers = {"deployments": report.chart_deployments, "lead-time": report.chart_lead_time,
                  "approvals": report.chart_approvals, "restore": report.chart_restore}
        if name not in makers:
            return api.error_response(404, "NotFound", f"no chart {name}")
        svg = makers[name](dora.from_index(st(request).reader_db()))
        if svg is None:
            svg = '<svg class="chart" viewBox="0 0 300 40" role="img"><text x="10" y="25">no data yet</text></svg>'
        svg = svg.replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"', 1) if "xmlns=" not in svg[:200] else svg
        return Response(svg, media_type="image/svg+xml")


CHARTS = (("deployments", "Deployments per period"), ("lead-time", "Lead time"), ("approvals", "Registration to approval"),
          ("restore", "Time to restore"))

_AUDITS: dict = {}


def audit_summary(state) -> dict:
    """`shipledger audit` over the server's index (its code and sampled-block checks ask the node),
    once per indexed block."""
    from dataclasses import asdict

    from shipledger.compliance.audit import audit

    block = state.synced_block
    cached = _AUDITS.get(id(state))
    if cached and cached["block"] == block:
        return cached
    result = audit(state.reader_db(), state.endpoint)
    answer = {"block": block, "findings": [asdict(f) for f in result.findings], "summary": result.summary}
    _AUDITS[id(state)] = answer
    return answer


def live_versions(state, targets) -> dict[tuple[str, str], str]:
    """What is live in each target now: 'VERSION (deployment N)', from targetState and the index."""
    from shipledger._internal.reader import Reader

    targets = sorted(targets)
    if not targets:
        return {}
    answers = Reader(state.endpoint).calls([("DeploymentLedger", "targetState", [s, env]) for s, env in targets])
    index = state.reader_db()
    out = {}
    for target, (live, _) in zip(targets, answers):
        if live:
            release = index.started_release(live)
            out[target] = f"{release[1] if release else '?'} (deployment {live})"
    return out
