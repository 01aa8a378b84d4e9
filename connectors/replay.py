"""Dead letters back through their connector, after whatever made them fail is fixed
(a mapping, a configured unit, an allow-list, a full disk).

A letter that is taken is closed with its result; one rejected again stays pending with
the new reason and does not become a second dead letter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connectors.deadletters import DeadLetter, DeadLetterStore
from connectors.feeds.reader import FeedFileError, detect
from connectors.fhir.outcome import problems
from connectors.hl7v2.receiver import decode
from connectors.intake import Intake
from engine.bus import EventSink
from engine.config import Settings


class _Discard(DeadLetterStore):
    """A replay's own rejections are recorded on the original letter, not as new ones."""

    def __init__(self) -> None:  # no database
        pass

    def add(self, source: str, reason: str, raw: bytes | str, **_: Any) -> int:
        return 0


@dataclass(frozen=True)
class Replayed:
    id: int
    source: str
    taken: bool
    result: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "taken": self.taken, "result": self.result}


class Replayer:
    def __init__(self, settings: Settings, sink: EventSink, store: DeadLetterStore):
        self.store = store
        self.intake = Intake(settings, sink, _Discard())

    async def replay(self, letters: list[DeadLetter]) -> list[Replayed]:
        done = []
        for letter in letters:
            taken, result = await self._one(letter)
            self.store.mark_replayed(letter.id, result, taken=taken)
            done.append(Replayed(letter.id, letter.source, taken, result))
        return done

    async def _one(self, letter: DeadLetter) -> tuple[bool, str]:
        """The letter through its connector (the one pipeline), and what became of it."""
        if letter.source in ("hl7v2", "mllp"):
            result = await self.intake.hl7.handle(decode(letter.raw))
            if not result.taken:
                return False, f"{result.code}: {result.text}"
            return (
                True,
                "AA: duplicate, already stored" if result.duplicate else f"AA: {result.events} event(s)",
            )
        if letter.source == "fhir":
            result = await self.intake.fhir.post_counted(letter.raw)
            if not result.taken:
                return False, f"{result.code}: {problems(result.answer)}"
            return True, f"{result.code}: {result.text}"
        if letter.source.startswith("feed:"):
            feed = letter.source.split(":", 1)[1]
            try:
                result = await self.intake.feeds.ingest(
                    feed, letter.raw, detect(letter.content_type, None, letter.raw), letter.detail
                )
            except (FeedFileError, KeyError) as exc:
                return False, str(exc)
            if not result.taken:
                return False, result.text
            return True, "duplicate, already stored" if result.duplicate else f"{result.events} event(s)"
        return False, f"no connector replays source {letter.source!r}"
