"""The history filters that `history`, `export` and `shipledger serve` share: checked once, before any
sync, into Index.history's arguments, and named in the export's `filter` column."""

from __future__ import annotations

from dataclasses import dataclass

from shipledger.errors import UsageError


@dataclass(frozen=True)
class HistoryQuery:
    """What a reader asked for, as given (strings). The option names in errors are the CLI's."""

    service: str | None = None
    environment: str | None = None
    digest: str | None = None
    approver: str | None = None  # an address, already parsed
    org: str | None = None
    kinds: tuple[str, ...] | None = None
    since: str | None = None
    until: str | None = None

    def filters(self) -> dict:
        """Index.history(...) arguments. A filter that cannot match anything (an empty value, --since
        after --until) is a usage error, not an empty answer that looks like "nothing happened"."""
        from shipledger._internal.names import check_name
        from shipledger.compliance.index import digest_hex, expand_kinds

        for option, value in (("--service", self.service), ("--env", self.environment)):
            if value is not None:
                check_name(option, value)
        org = self.org.strip() if self.org is not None else None
        if org is not None and (not org or (org.isdigit() and not 1 <= int(org) <= 255)):
            raise UsageError(f"--org {self.org!r} is not an organisation (a name, or an id from 1 to 255)")
        since = parse_bound("--since", self.since, end=False)
        until = parse_bound("--until", self.until, end=True)
        check_period(since, until, self.since, self.until)
        return {
            "service": self.service, "environment": self.environment, "approver": self.approver, "org": org,
            "digest": digest_hex(self.digest) if self.digest is not None else None,
            "kinds": expand_kinds(self.kinds) if self.kinds is not None else None,
            "since": since, "until": until,
        }

    def text(self) -> str:
        """The filters given, as the export's `filter` column says them ("" for none), e.g.
        "service=pay kind=deployed" (no leading '-': a spreadsheet would take the cell for a formula)."""
        parts = [f"{option}={value}" for option, value in (
            ("service", self.service), ("env", self.environment), ("digest", self.digest),
            ("approver", self.approver), ("org", self.org), ("since", self.since), ("until", self.until))
            if value is not None]
        return " ".join(parts + [f"kind={kind}" for kind in self.kinds or ()])


def parse_bound(option: str, text: str | None, end: bool):
    """Index.parse_when with the option named in its error; None stays None."""
    from shipledger.compliance.index import parse_when

    if text is None:
        return None
    try:
        return parse_when(text, end=end)
    except UsageError as exc:
        raise UsageError(f"{option} {exc}") from None


def report_time(option: str, text: str | None, end: bool) -> int | None:
    """A report bound as unix seconds: a date or an ISO datetime, never a block number."""
    import datetime as dt

    when = parse_bound(option, text, end)
    if when is None:
        return None
    if not isinstance(when, dt.datetime):
        raise UsageError(f"{option} {text!r}: the report takes a date (YYYY-MM-DD) or an ISO datetime, not a block number")
    return int(when.timestamp())


def check_period(since, until, since_text, until_text) -> None:
    """--since after --until selects nothing. Bounds of different kinds (a block and a time) cannot
    be compared before the index is read and are left to it."""
    if since is not None and until is not None and type(since) is type(until) and since > until:
        raise UsageError(f"--since {since_text} is after --until {until_text}: the period is empty")


def check_org(index, org: str | None) -> None:
    """An organisation the filter names by id must be one the index knows (names are checked by
    Index.history itself): `--org 99` is a typo, not an organisation with no events."""
    if org is None or not org.strip().isdigit():
        return
    org = org.strip()
    if index.db.execute("SELECT 1 FROM organisation_added WHERE org = ? LIMIT 1", (int(org),)).fetchone() is None:
        known = [f"{r[0]} ({r[1]})" for r in index.db.execute("SELECT org, name FROM organisation_added ORDER BY org")]
        raise UsageError(f"--org {org}: no organisation {org} in the index" + (f"; known: {', '.join(known)}" if known else ""))
