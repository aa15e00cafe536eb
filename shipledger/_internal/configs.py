"""Config files people write: YAML or JSON, read one way with one error wording (the canary judge's
analysis configs, the incident dependency map)."""

from __future__ import annotations

import json
from pathlib import Path

from shipledger.errors import UsageError, path_error


def load_document(path: str | Path, what: str):
    """The parsed document at path: JSON for a .json name or a leading '{', otherwise YAML (which
    takes JSON too). UsageError naming the path (and the line, where the parser knows it) when it
    cannot be read or parsed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from an editor is not content
    except (OSError, UnicodeDecodeError) as exc:
        raise path_error(f"{what} {path}", exc) from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    import yaml  # only configs need it

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise UsageError(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
