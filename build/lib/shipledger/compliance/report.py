"""The DORA report as one self-contained HTML file: inline CSS, charts as inline SVG drawn by
matplotlib (Agg/SVG backends, imported only here so the CLI starts fast), no scripts, nothing
fetched from the network (a Content-Security-Policy forbids it)."""

from __future__ import annotations

import datetime as dt
import html
import io
import os
import re

from shipledger.compliance.dora import DoraReport, Summary

MAX_ROWS = 300  # rows per table: a quarter of a busy service stays readable; the JSON has them all
COLOURS = {"ok": "#2f6db5", "failure": "#d9822b", "reject": "#9a3b3b", "median": "#333333"}
CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d2430;margin:0;background:#f5f6f8}
main{max-width:1100px;margin:0 auto;padding:24px 28px 48px;background:#fff;min-height:100vh}
h1{font-size:26px;margin:0 0 4px} h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #dde1e7;padding-bottom:4px}
.scope{color:#5a6475;margin:0 0 20px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:12px}
.card{border:1px solid #dde1e7;border-radius:8px;padding:12px 14px}
.card .label{font-size:13px;color:#5a6475} .card .value{font-size:24px;font-weight:600;margin:2px 0}
.card .note{font-size:12px;color:#5a6475}
figure{margin:12px 0 4px} figcaption{font-size:13px;color:#5a6475}
svg.chart{width:100%;height:auto;max-width:860px;display:block}
table{border-collapse:collapse;font-size:13px;margin:8px 0;width:100%}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eceff3;vertical-align:top}
th{background:#f5f6f8} td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-size:12px} .empty{color:#5a6475;font-style:italic}
dl{font-size:13px} dt{font-weight:600;margin-top:6px} dd{margin-left:16px;color:#3b4454}
footer{margin-top:36px;font-size:12px;color:#5a6475}
"""


# ---------------------------------------------------------------------- formatting

def duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    seconds = round(seconds)
    for size, unit, small, small_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "min"), (60, "min", 1, "s")):
        if seconds >= size:
            big, rest = divmod(seconds, size)
            rest //= small
            return f"{big} {unit}" + (f" {rest} {small_unit}" if rest else "")
    return f"{seconds} s"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def when(timestamp: int | None) -> str:
    if timestamp is None:
        return ""
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def _unit(values: list[float]) -> tuple[float, str]:
    """A unit that suits the median of durations in seconds."""
    middle = sorted(values)[len(values) // 2] if values else 0
    for size, name in ((86400, "days"), (3600, "hours"), (60, "minutes")):
        if middle >= 2 * size:
            return size, name
    return 1, "seconds"


# ---------------------------------------------------------------------- charts

def _pyplot():
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({
        "svg.fonttype": "none",  # text stays text: small, selectable, searchable
        "svg.hashsalt": "shipledger",  # stable element ids run to run
        "font.family": "DejaVu Sans", "font.size": 10, "axes.spines.top": False, "axes.spines.right": False,
    })
    import matplotlib.pyplot as plt

    return plt


def _svg(fig, name: str, label: str) -> str:
    """The figure as an inline <svg>: no XML prolog, scalable, and its element ids prefixed with the
    chart's name so several charts in one page never share an id."""
    plt = _pyplot()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)  # creation date and tool: noise
    text = re.sub(r'id="([^"]+)"', rf'id="{name}-\1"', text)
    text = re.sub(r'(href|xlink:href)="#([^"]+)"', rf'\1="#{name}-\2"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{name}-\1)", text)
    text = re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"',
                  rf'<svg\1 class="chart" role="img" aria-label="{esc(label)}"', text, count=1)
    return text


def _legend(ax) -> None:
    """Above the plot, so it never hides a bar."""
    ax.legend(frameon=False, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=3, borderaxespad=0.2)


def _few(ax, count: int, slots: int = 8) -> None:
    """Keep a handful of bars from turning into wide blocks: leave room as if there were `slots`."""
    if count < slots:
        ax.set_xlim(-0.6, slots - 0.4)


def chart_deployments(report: DoraReport) -> str | None:
    if not report.buckets or not any(b.completed for b in report.buckets):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.6, 3.0))
    xs = range(len(report.buckets))
    healthy = [b.completed - b.change_failures for b in report.buckets]
    failures = [b.change_failures for b in report.buckets]
    width = 0.6 if len(report.buckets) < 10 else 0.85
    ax.bar(xs, healthy, color=COLOURS["ok"], width=width, label="completed")
    ax.bar(xs, failures, bottom=healthy, color=COLOURS["failure"], width=width,
           label="later rolled back or named by an incident")
    step = max(1, len(report.buckets) // 12)
    ax.set_xticks(list(xs)[::step], [b.start for b in report.buckets][::step], rotation=30, ha="right")
    ax.set_ylabel(f"deployments per {report.bucket}")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0, max(b.completed for b in report.buckets) * 1.1)
    _legend(ax)
    return _svg(fig, "deployments", f"Completed production deployments per {report.bucket}")


def chart_lead_time(report: DoraReport) -> str | None:
    values = [lt.seconds for lt in report.lead_times]
    if not values:
        return None
    plt = _pyplot()
    size, unit = _unit(values)
    fig, ax = plt.subplots(figsize=(8.6, 3.0))
    scaled = [v / size for v in values]
    ax.hist(scaled, bins=min(20, max(5, len(values))), color=COLOURS["ok"], edgecolor="white")
    ax.axvline(report.lead_time.median / size, color=COLOURS["median"], linestyle="--",
               label=f"median {duration(report.lead_time.median)}")
    ax.set_xlabel(f"lead time ({unit})")
    ax.set_ylabel("artifacts")
    ax.yaxis.get_major_locator().set_params(integer=True)
    _legend(ax)
    return _svg(fig, "leadtime", "Distribution of lead times from commit to production")


def chart_approvals(report: DoraReport) -> str | None:
    orgs = report.approvals_per_org
    if not orgs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.6, 0.6 + 0.55 * len(orgs)))
    ys = range(len(orgs))
    ax.barh([y - 0.2 for y in ys], [o.approvals for o in orgs], height=0.4, color=COLOURS["ok"], label="approvals")
    ax.barh([y + 0.2 for y in ys], [o.rejections for o in orgs], height=0.4, color=COLOURS["reject"], label="rejections")
    ax.set_yticks(list(ys), [o.name for o in orgs])
    ax.invert_yaxis()
    ax.xaxis.get_major_locator().set_params(integer=True)
    _legend(ax)
    return _svg(fig, "approvals", "Approvals and rejections per organisation")


def chart_restore(report: DoraReport) -> str | None:
    done = [r for r in report.restores if r.seconds is not None]
    if not done:
        return None
    plt = _pyplot()
    size, unit = _unit([r.seconds for r in done])
    fig, ax = plt.subplots(figsize=(8.6, 3.0))
    xs = range(len(done))
    ax.bar(xs, [r.seconds / size for r in done], color=COLOURS["failure"], width=0.6)
    _few(ax, len(done))
    ax.axhline(report.time_to_restore.median / size, color=COLOURS["median"], linestyle="--",
               label=f"median {duration(report.time_to_restore.median)}")
    step = max(1, len(done) // 20)
    ax.set_xticks(list(xs)[::step], [f"#{r.incident} sev{r.severity}" for r in done][::step], rotation=30, ha="right")
    ax.set_ylabel(f"open to resolved ({unit})")
    _legend(ax)
    return _svg(fig, "restore", "Time to restore per incident")


# ---------------------------------------------------------------------- the page

def _card(label: str, value: str, note: str = "") -> str:
    return (f'<div class="card"><div class="label">{esc(label)}</div><div class="value">{esc(value)}</div>'
            f'<div class="note">{esc(note)}</div></div>')


def _figure(svg: str | None, caption: str, empty: str) -> str:
    if svg is None:
        return f'<p class="empty">{esc(empty)}</p>'
    return f"<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>"


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    if not rows:
        return '<p class="empty">None in this period.</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    shown = rows[-MAX_ROWS:]
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{esc(c)}</td>' for i, c in enumerate(row)) + "</tr>"
        for row in shown
    )
    more = f'<p class="empty">The latest {len(shown)} of {len(rows)} rows; `report --json` lists them all.</p>' if len(rows) > len(shown) else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _summary_note(s: Summary) -> str:
    return f"{s.count} values, p90 {duration(s.p90)}" if s.count else "no data"


def render(report: DoraReport, meta: dict | None = None) -> str:
    """The report as one HTML document. meta: chain_id, registry, ledger, checkpoint_block,
    checkpoint_hash (from the index) and command, shown in the footer so a reader can trace it."""
    meta = meta or {}
    r = report
    scope = f"service {r.service}" if r.service else "all services"
    period = f"{when(r.since)} to {when(r.until)}" if r.since is not None else "no production deployments yet"
    left_out = ""
    if r.lead_time_left_out:
        reasons = "; ".join(f"{n}: {reason}" for reason, n in r.lead_time_left_out_reasons.items())
        left_out = f"{r.lead_time_left_out} artifact(s) left out ({reasons})"
    cards = "".join([
        _card("Deployment frequency", f"{r.deployments_per_day:.2f} / day" if r.deployments_per_day is not None else "n/a",
              f"{r.completed} completed in {r.period_days:.1f} days ({r.deployments_per_week or 0:.1f} / week)"),
        _card("Lead time for changes (median)", duration(r.lead_time.median),
              _summary_note(r.lead_time) + (f"; {r.lead_time_from_git} from git" if r.lead_time_from_git else "")
              + (f"; {r.lead_time_left_out} left out" if r.lead_time_left_out else "")),
        _card("Change failure rate", percent(r.change_failure_rate),
              f"{r.change_failures} of {r.deployments} deployments rolled back or named by an incident"),
        _card("Time to restore (median)", duration(r.time_to_restore.median),
              _summary_note(r.time_to_restore) + (f"; {r.unresolved_incidents} still open" if r.unresolved_incidents else "")),
        _card("Rollback rate", percent(r.rollback_rate), f"{r.rolled_back} of {r.deployments} deployments rolled back"),
        _card("Registration to approval (median)", duration(r.registration_to_approved.median),
              f"last approval before deploying; first approval {duration(r.registration_to_first_approval.median)}"),
    ])
    deployments = [[d.id, d.service, d.environment, d.version, when(d.started_at), when(d.completed_at),
                    "rolled back" if d.rolled_back else "failed" if d.failed else "completed" if d.completed_at else "in progress",
                    ", ".join(f"#{i}" for i in d.incidents)] for d in r.deployment_list]
    lead_rows = [[lt.service, lt.version, lt.deployment, when(lt.committed_at), when(lt.completed_at), duration(lt.seconds),
                  lt.source] for lt in r.lead_times]
    incident_rows = [[x.incident, x.service, x.environment, x.severity, x.title, when(x.opened_at), when(x.resolved_at),
                      duration(x.seconds) if x.seconds is not None else "open"] for x in r.restores]
    org_rows = [[o.name, o.org, o.approvals, o.rejections] for o in r.approvals_per_org]
    approval_rows = [[a.service, a.version, a.environment, duration(a.first_approval),
                      duration(a.approved) if a.approved is not None else "not deployed"] for a in r.approval_delays]
    footer = " · ".join(esc(f"{k.replace('_', ' ')} {v}") for k, v in meta.items() if v not in (None, ""))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DORA report: {esc(scope)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<h1>Delivery performance (DORA) from the ledger</h1>
<p class="scope">{esc(scope)} · environments {esc(", ".join(r.environments))} · {esc(period)}</p>
<div class="cards">{cards}</div>

<h2>Deployment frequency</h2>
{_figure(chart_deployments(r), f"Completed production deployments per {r.bucket}; orange: later rolled back or named as a suspect by an incident.", "No production deployment completed in this period.")}
{_table(["id", "service", "env", "version", "started", "completed", "outcome", "incidents"], deployments, {0})}

<h2>Lead time for changes</h2>
{_figure(chart_lead_time(r), "Commit time to the completion of each artifact's first production deployment.", "No lead time in this period.")}
<p>{esc(left_out or "No artifact was left out.")}</p>
{_table(["service", "version", "deployment", "committed", "in production", "lead time", "commit time from"], lead_rows, {2})}

<h2>Time to restore</h2>
{_figure(chart_restore(r), "Each resolved incident, from opened to resolved.", "No incident was resolved in this period.")}
{_table(["incident", "service", "env", "severity", "title", "opened", "resolved", "time to restore"], incident_rows, {0, 3})}

<h2>Approvals</h2>
{_figure(chart_approvals(r), "Approvals and rejections cast for these environments, per organisation.", "No approval in this period.")}
{_table(["organisation", "id", "approvals", "rejections"], org_rows, {1, 2, 3})}
{_table(["service", "version", "env", "to first approval", "to last approval before deploying"], approval_rows)}

<h2>Definitions</h2>
<dl>
<dt>Deployment frequency</dt><dd>Production deployments completed in the period, per day (a period shorter than a day counts as a day).</dd>
<dt>Lead time for changes</dt><dd>For each artifact, from its commit time to the completion of its first production deployment. The commit time is the one recorded at registration; when none was recorded it is read from the local git repository, and artifacts whose commit is not there are left out and counted above.</dd>
<dt>Change failure rate</dt><dd>Deployments started in the period that were rolled back or named as a suspect by an incident, over all deployments started in the period.</dd>
<dt>Time to restore</dt><dd>Median time from an incident being opened to being resolved, for incidents opened in the period.</dd>
<dt>Rollback rate</dt><dd>Deployments rolled back over all deployments started in the period.</dd>
<dt>Registration to approval</dt><dd>For each artifact and environment, time from registration to its first approval, and to the last approval cast before its first deployment there.</dd>
</dl>
<footer>Every number comes from the ledger's events as indexed by shipledger. {footer}</footer>
</main>
</body>
</html>
"""


def write(report: DoraReport, path, meta: dict | None = None) -> None:
    """Render and write atomically: a temporary file beside the target, then os.replace."""
    import tempfile
    from pathlib import Path

    path = Path(path)
    text = render(report, meta)
    from shipledger._internal.files import created_mode

    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, created_mode())  # mkstemp's 0600 would ignore the umask
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
