"""docs/feeds.md, written from the row schemas so the documentation cannot drift from the
code (`make docs` rewrites it; a test fails when it is stale)."""

from __future__ import annotations

from pathlib import Path

from connectors.feeds.schemas import FEEDS, columns
from engine import hcahps

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "feeds"

INTRO = """\
# Feeds: staffing, HR, finance, patient experience, quality

<!-- generated from connectors/feeds/schemas.py by `make docs`; edit the schemas, not this file -->

The systems that do not speak HL7 or FHIR send tables. Each feed has one row schema, the
same in every format:

- **CSV** (UTF-8, header on line 1, a column per field; empty cells are missing values),
- a **JSON** array of row objects, or
- **NDJSON** (one row object per line).

Two ways in, with the same result:

- `POST /api/v1/feeds/<feed>` with the file as the body and `Content-Type: text/csv`,
  `application/json` or `application/x-ndjson`, e.g.
  `curl --data-binary @staffing.csv -H 'Content-Type: text/csv' http://127.0.0.1:8000/api/v1/feeds/staffing`.
  The schemas are also in the OpenAPI document (`/docs`) and at `GET /api/v1/feeds`.
- Drop the file into the watched folder (`feeds.inbox`, default `<data_dir>/inbox`): into
  `inbox/<feed>/`, or at the top with a name starting with the feed (`staffing-0700.csv`).
  Once its size has been stable for one poll it is taken and moved to `inbox/done/` with a
  `.result.json` beside it; a file that cannot be read goes to `inbox/failed/` with the reason.
  Write large files under a `.tmp`/`.part` name and rename them when complete.
- Offline backfill: `carescore import feed <feed> FILE...` (carescore stopped).

What comes back: counts of rows accepted, already stored (the same row sent again is stored
once) and rejected, and for each rejected row its **line**, the **field** and the reason.
Good rows are kept when others fail; each bad row is kept as a dead letter
(`GET /api/v1/dead-letters`) and can be sent again with `carescore deadletter replay` after
the fix. The upload answers 422 (problem+json) only when the file as a whole is unreadable
(not UTF-8, unknown or missing columns) or none of its rows could be used; nothing is stored
from an unreadable file.

Rules for every feed:

- `unit` must be a unit configured under `places:` (its id or one of its codes) when any
  units are configured; `facility` defaults to the default facility.
- Times are ISO 8601. Without an offset, the site's `timezone` applies; a date alone means
  local midnight. A time more than 5 minutes in the future is refused (a planned roster is
  not time-and-attendance).
- Unknown columns or keys are errors, so a misspelt column never silently drops data.
"""


def render_markdown() -> str:
    parts = [INTRO]
    for name, model in FEEDS.items():
        doc = " ".join((model.__doc__ or "").split())
        parts.append(f"\n## `{name}`: {model.title}\n\n{doc}\n")
        parts.append("\n| column | required | type | meaning |\n|---|---|---|---|\n")
        for column, required, kind, description in columns(model):
            parts.append(f"| `{column}` | {'yes' if required else ''} | {kind} | {description} |\n")
        if name == "experience":
            parts.append(hcahps_items())
        samples = sorted(p.name for p in EXAMPLES.glob(f"{name}.*"))
        if samples:
            links = ", ".join(f"[{s}](../deploy/examples/feeds/{s})" for s in samples)
            parts.append(f"\nSample: {links}.\n")
    return "".join(parts)


def hcahps_items() -> str:
    """The HCAHPS items the experience feed scores (engine/hcahps.py), with their answers."""
    rows = [
        "\nHCAHPS items (`question`: the id, or the CMS question number of the 2018-2024 survey; "
        "`answer`: as worded, or the response code in brackets; **bold** is the top box). "
        "Screeners are stored, never scored; About You answers are not stored.\n",
        "\n| question | id | measure | answers |\n|---|---|---|---|\n",
    ]
    for item in hcahps.ITEMS.values():
        if item.scale is None:
            rows.append(f"| Q{item.number} | `{item.id}` | About You | not stored |\n")
            continue
        scale = hcahps.SCALES[item.scale]
        top = scale.top if item.role == "scored" else frozenset()
        words = [
            (f"**{o.replace('_', ' ')}**" if o in top else o.replace("_", " "))
            + ("" if scale.numeric else f" ({scale.code_of(o)})")
            for o in scale.options
        ]
        words += [f"{w.replace('_', ' ')} ({c}): not counted" for c, w in item.not_applicable.items()]
        measure = hcahps.DOMAINS[item.domain].title if item.domain else "screener"
        rows.append(f"| Q{item.number} | `{item.id}` | {measure} | {', '.join(words)} |\n")
    return "".join(rows)


if __name__ == "__main__":
    print(render_markdown(), end="")
