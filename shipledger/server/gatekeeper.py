"""What the CD and CI hooks (Flagger, GitHub) share: the gate asked in-process at the head the server
last saw, its sentence, and which denials no vote can change (a hard denial).

Any failure to get an answer raises ShipledgerError: each hook turns that into its own "cannot
decide" (503, or no approval sent), never into an allowed.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from shipledger.errors import UsageError, gate_sentence
from shipledger.server import votes
from shipledger.server.votes import GateAnswer

# Denials only time or votes can lift: the rollout waits (Argo: inconclusive, GitHub: a status report).
WAITING_REASONS = votes.VOTE_REASONS | {"waiting_period"}
# Denials that mean "roll back" to Flagger's rollback hook.
ROLLBACK_REASONS = frozenset({"artifact_revoked", "frozen_by_incident"})


async def ask(state, digest: str, service: str, environment: str) -> GateAnswer:
    """The gate's answer for the checked inputs (UsageError on bad ones), counted like /v1/gate's."""
    target = votes.gate_target(digest, service, environment)
    try:
        block = state.known_head()
        answer = state.gates.cached(block, *target) or await run_in_threadpool(state.gates.ask, block, *target)
    except Exception:
        state.gate_answers["unknown"] += 1
        raise
    state.gate_answers[answer.reason] += 1
    return answer


def sentence(answer: GateAnswer) -> str:
    try:
        return gate_sentence(answer.reason, answer.details)
    except (KeyError, IndexError, ValueError):
        return f"the gate denies it ({answer.reason})"


def digest_of(digest: str | None, image: str | None) -> str:
    """The digest asked about: `digest`, or the one an image reference pins (REPO@sha256:...). A tag
    alone is refused: a tag can move."""
    if (digest is None) == (image is None):
        raise UsageError("give exactly one of digest and image")
    if digest is not None:
        return digest
    _, at, pinned = image.rpartition("@")
    if not at or not pinned.startswith("sha256:"):
        raise UsageError(f"image {image!r} names no digest (REPO@sha256:...): a tag can move, so it cannot be gated")
    return pinned
