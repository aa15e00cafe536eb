"""Compliance: the SQLite event index, trace, audit, export and its verification, DORA metrics and the report."""
