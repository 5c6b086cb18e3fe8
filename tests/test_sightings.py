"""Sightings of the browser extension: idempotent, and safe when the same student is reported
by many devices at the same moment."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from rostersync import service
from rostersync.store.schema import id_map, people, sightings


def test_concurrent_sightings_of_a_new_student_make_one_pending_person(store: sa.Engine) -> None:
    service.add_district(store, "Springfield")
    emails = [f"new{n}@springfield.example" for n in range(6)]
    reports = [e for e in emails for _ in range(8)]

    def report(email: str) -> int:
        return int(service.record_sighting(store, "Springfield", email=email)["person"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        answered = list(pool.map(report, reports))

    with store.connect() as conn:
        persons = conn.execute(sa.select(people.c.id, people.c.email)).all()
        mapped = conn.execute(
            sa.select(id_map.c.external_id, id_map.c.canonical_id).where(
                id_map.c.namespace == "email"
            )
        ).all()
        seen = conn.execute(sa.select(sa.func.count()).select_from(sightings)).scalar_one()
    assert sorted(email for _, email in persons) == sorted(emails)
    assert {email: pid for email, pid in mapped} == {email: pid for pid, email in persons}
    by_email = dict(zip(reports, answered, strict=True))
    assert all(by_email[e] == pid for pid, e in persons)
    assert seen == len(reports)
