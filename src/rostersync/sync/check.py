"""Check: the safety rules that hold a run for an admin instead of applying it.

A run is held when its feed is empty or cut short, or when it would archive, end or change
more than the district's share (default 10 %) of any record type the source held — with an
absolute floor, so a school of twelve students can still lose two. Providers such as Clever,
Okta and Entra ID guard their syncs the same way: a wrong export should cost an admin a click,
not a district its rosters.
"""

from __future__ import annotations

from collections.abc import Sequence

from rostersync.domain.feed import Entity
from rostersync.sync.resolve import EntityPlan
from rostersync.sync.stage import Staged

LABELS: dict[Entity, str] = {
    "school": "schools",
    "term": "terms",
    "person": "people",
    "section": "sections",
    "enrollment": "enrollments",
}


def check(staged: Staged, plans: Sequence[EntityPlan], share: float, floor: int) -> list[str]:
    """Reasons to hold the run; empty when it may be applied."""
    reasons: list[str] = []
    feed = staged.feed
    if feed.truncated:
        reasons.append(f"The feed looks cut short: {feed.truncated}")
    for plan in plans:
        label = LABELS[plan.entity]
        before = plan.before_count
        mode = feed.modes.get(plan.entity, feed.mode)
        if mode == "full" and before > 0 and staged.frames[plan.entity].height == 0:
            reasons.append(
                f"The feed lists no {label}, but the last sync had {before}. "
                "An empty export usually means a broken export, not an empty district."
            )
            continue
        limit = max(share * before, floor)
        counts = plan.counts()
        removed = counts.get("archive", 0) + counts.get("end", 0)
        if before and removed > limit:
            reasons.append(
                f"{removed} of {before} {label} would be archived or ended "
                f"({removed / before:.0%}; the limit is {share:.0%})."
            )
        updated = counts.get("update", 0)
        if before and updated > limit:
            reasons.append(
                f"{updated} of {before} {label} would change "
                f"({updated / before:.0%}; the limit is {share:.0%})."
            )
    return reasons
