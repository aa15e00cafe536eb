"""Where a canary analysis gets its samples: the Prometheus HTTP API or a command.

The analysis config names the source under `source:` and each metric's query under the metric:

    source:
      prometheus: http://127.0.0.1:9090   # base URL of the Prometheus HTTP API
      step: 1s                            # query_range resolution (default 10s)
      lookback: 2m                        # window ending now (default: the rollout interval)
      timeout: 10s                        # per HTTP request (default 10s)
    metrics:
      - name: latency
        direction: increase
        query:
          baseline: histogram_quantile(0.99, sum by (le) (rate(http_seconds_bucket{track="stable"}[1m])))
          canary: histogram_quantile(0.99, sum by (le) (rate(http_seconds_bucket{track="canary"}[1m])))

or, for anything else, a command that prints samples in the judge's CSV (`metric,value` rows) or JSON
(`{"metric": [values]}`) format:

    source:
      command: "fetch-samples {scope} {metric} {start} {end}"

The command line is split like a shell would (shlex) and run without a shell; each word may hold the
placeholders {scope} (baseline or canary), {metric}, {start} and {end} (unix seconds), {step}
(seconds), {service} and {env}. Without {metric} it runs once per scope and prints every metric. A
metric may carry its own `command:` to override the source's.

Every failure (unreachable server, a PromQL error, a non-zero exit, unreadable output) raises
MetricsError: the controller never promotes on samples it could not get.
"""

from __future__ import annotations

import json
import math
import shlex
import string
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from shipledger._internal.names import parse_duration
from shipledger.errors import ShipledgerError, UsageError

SCOPES = ("baseline", "canary")
COMMAND_PLACEHOLDERS = {"scope", "metric", "start", "end", "step", "service", "env"}
DEFAULT_STEP = 10.0
DEFAULT_TIMEOUT = 10.0
MAX_POINTS = 11_000  # Prometheus refuses a query_range with more points per series


class MetricsError(ShipledgerError):
    """Samples could not be fetched: the analysis cannot be judged (and nothing is promoted)."""


def command_words(template: str, allowed: set[str], what: str) -> list[str]:
    """Split a command template like a shell and check its {placeholders}; the words, unformatted."""
    if not isinstance(template, str) or not template.strip():
        raise UsageError(f"{what} must be a non-empty command line")
    try:
        words = shlex.split(template)
    except ValueError as exc:
        raise UsageError(f"{what} {template!r} cannot be split into words: {exc}") from None
    for word in words:
        try:
            names = {field for _, field, _, _ in string.Formatter().parse(word) if field is not None}
        except ValueError as exc:
            raise UsageError(f"{what} {template!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
        unknown = names - allowed
        if unknown:
            raise UsageError(f"{what} uses unknown placeholder(s) {', '.join(sorted(f'{{{n}}}' for n in unknown))}; "
                             f"known: {', '.join(sorted(f'{{{n}}}' for n in allowed))}")
    return words


@dataclass(frozen=True)
class Window:
    """The time range samples are taken from, unix seconds."""

    start: float
    end: float
    step: float

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "step": self.step}


def _metric_entries(raw: dict) -> list[dict]:
    metrics = raw.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        raise UsageError("the analysis config needs a non-empty `metrics:` list")
    for number, metric in enumerate(metrics, 1):
        if not isinstance(metric, dict) or not isinstance(metric.get("name"), str) or not metric["name"]:
            raise UsageError(f"metrics entry {number} needs a `name:`")
    return metrics


class Source:
    """A metric source built from an analysis config's `source:` (see the module docstring)."""

    kind = ""

    def __init__(self, raw: dict, step: float, lookback: float | None):
        self.metrics = _metric_entries(raw)
        self.step = step
        self.lookback = lookback  # None: the caller's interval

    @staticmethod
    def from_config(raw: dict) -> Source:
        """Check `source:` and every metric's query or command; raise UsageError naming what is wrong."""
        source = raw.get("source")
        if not isinstance(source, dict):
            raise UsageError("the analysis config needs a `source:` mapping with `prometheus: URL` or `command: CMD`")
        known = {"prometheus", "command", "step", "lookback", "timeout"}
        unknown = set(source) - known
        if unknown:
            raise UsageError(f"source: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        if ("prometheus" in source) == ("command" in source):
            raise UsageError("source: give exactly one of `prometheus: URL` and `command: CMD`")
        step = parse_duration(source.get("step", DEFAULT_STEP), "source.step", positive=True)
        lookback = parse_duration(source["lookback"], "source.lookback", positive=True) if "lookback" in source else None
        if lookback is not None and lookback / step > MAX_POINTS:
            raise UsageError(f"source: lookback / step gives more than {MAX_POINTS} points per series; raise the step")
        timeout = parse_duration(source.get("timeout", DEFAULT_TIMEOUT), "source.timeout", positive=True)
        if "prometheus" in source:
            return PrometheusSource(raw, source["prometheus"], step, lookback, timeout)
        return CommandSource(raw, source["command"], step, lookback, timeout)

    def window(self, end: float, interval: float) -> Window:
        lookback = self.lookback if self.lookback is not None else interval
        return Window(start=round(end - lookback, 3), end=round(end, 3), step=self.step)

    def fetch(self, window: Window, service: str = "", env: str = "") -> tuple[dict[str, list[float]], dict[str, list[float]]]:
        """(baseline, canary): samples per metric name over the window."""
        raise NotImplementedError


class PrometheusSource(Source):
    """query_range against the Prometheus HTTP API: one query for the baseline, one for the canary."""

    kind = "prometheus"

    def __init__(self, raw: dict, url, step: float, lookback: float | None, timeout: float):
        super().__init__(raw, step, lookback)
        parsed = urllib.parse.urlparse(url if isinstance(url, str) else "")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UsageError(f"source.prometheus {url!r} must be an http(s) URL like http://127.0.0.1:9090")
        self.url = url.rstrip("/")
        self.timeout = timeout
        for metric in self.metrics:
            query = metric.get("query")
            if not isinstance(query, dict) or not all(isinstance(query.get(s), str) and query[s].strip() for s in SCOPES):
                raise UsageError(f"metric {metric['name']!r} needs `query: {{baseline: PROMQL, canary: PROMQL}}` "
                                 "for a prometheus source")

    def fetch(self, window, service="", env=""):
        samples = {scope: {} for scope in SCOPES}
        for metric in self.metrics:
            for scope in SCOPES:
                samples[scope][metric["name"]] = self.query_range(metric["query"][scope], window, f"{metric['name']} ({scope})")
        return samples["baseline"], samples["canary"]

    def query_range(self, promql: str, window: Window, what: str) -> list[float]:
        """The values of every series the query returns over the window, in time order per series.
        A query should aggregate (sum, avg, histogram_quantile...) to one series per scope."""
        form = urllib.parse.urlencode({"query": promql, "start": window.start, "end": window.end, "step": window.step})
        request = urllib.request.Request(f"{self.url}/api/v1/query_range", form.encode(),
                                         {"Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise MetricsError(f"Prometheus refused the query for {what}: {_prometheus_error(exc)}") from None
        except (OSError, ValueError) as exc:
            raise MetricsError(f"cannot query Prometheus at {self.url} for {what}: {exc}") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            raise MetricsError(f"Prometheus answered the query for {what} with an error: {body.get('error') if isinstance(body, dict) else body!r}")
        data = body.get("data") or {}
        if data.get("resultType") != "matrix":
            raise MetricsError(f"Prometheus returned a {data.get('resultType')!r} for {what}, not a matrix (range vector)")
        try:
            return [float(value) for series in data["result"] for _, value in series["values"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise MetricsError(f"Prometheus returned malformed samples for {what}: {exc}") from None


def _prometheus_error(exc: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(exc.read()).get("error")
    except (OSError, ValueError, AttributeError):
        detail = None
    return f"HTTP {exc.code}" + (f": {detail}" if detail else "")


class CommandSource(Source):
    """Runs a command per scope (and per metric when it names {metric}) and reads samples from stdout."""

    kind = "command"

    def __init__(self, raw: dict, template, step: float, lookback: float | None, timeout: float):
        super().__init__(raw, step, lookback)
        self.template = command_words(template, COMMAND_PLACEHOLDERS, "source.command")
        self.timeout = timeout
        self.own = {m["name"]: command_words(m["command"], COMMAND_PLACEHOLDERS, f"metric {m['name']!r} command")
                    for m in self.metrics if "command" in m}

    def fetch(self, window, service="", env=""):
        names = [m["name"] for m in self.metrics]
        values = {"start": window.start, "end": window.end, "step": window.step, "service": service, "env": env}
        samples = {scope: {} for scope in SCOPES}
        for scope in SCOPES:
            shared = None  # one run of a source command without {metric} serves every metric
            for name in names:
                words = self.own.get(name, self.template)
                if words is self.template and not any("{metric}" in w for w in words):
                    if shared is None:
                        shared = self._run(words, {**values, "scope": scope, "metric": ""}, f"{scope} samples")
                    found = shared
                else:
                    found = self._run(words, {**values, "scope": scope, "metric": name}, f"{name} ({scope})")
                samples[scope][name] = found.get(name, [])
        return samples["baseline"], samples["canary"]

    def _run(self, words: list[str], values: dict, what: str) -> dict[str, list[float]]:
        argv = [w.format(**values) for w in words]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MetricsError(f"the metric command for {what} could not run: {exc}") from None
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["no message"]
            raise MetricsError(f"the metric command for {what} exited with {done.returncode}: {tail[0]}")
        try:
            return parse_samples(done.stdout)
        except UsageError as exc:
            raise MetricsError(f"the metric command for {what} printed no samples the judge can read: {exc}") from None


def json_samples(samples: dict[str, list[float]]) -> dict[str, list[float | None]]:
    """Samples a JSON report can hold exactly: NaN and infinities (Prometheus returns both, e.g. for
    0/0 and x/0) become null, which the judge reads as NaN and handles by its nan_strategy, as it does
    infinities. The controller judges these very lists, so a report recomputes to the same verdict."""
    return {name: [v if v is not None and math.isfinite(v) else None for v in values] for name, values in samples.items()}


def parse_samples(text: str) -> dict[str, list[float]]:
    """Samples in the judge's own formats (judge.load_samples reads them): JSON {"metric": [values]}
    or CSV `metric,value` rows."""
    from shipledger.delivery.judge import load_samples

    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="samples-") as handle:
        handle.write(text)
        handle.flush()
        return load_samples(handle.name)
