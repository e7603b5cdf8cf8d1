"""Rotation: the published next key becomes the signing key, a new next key is published.

A relying party that caches the JWKS for the advertised ``max-age`` must never meet a ``kid`` it
has not seen. So a next key signs only after it has been published for longer than that max-age
plus the time instances take to re-read the key table; ``rotate`` refuses earlier (the operator may
force it). Retired keys stay published until every token they signed has expired, then
``remove_expired`` deletes them.

Every step is a conditional UPDATE, so two instances (or an operator and the automatic rotation)
rotating at once produce one rotation, not two.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, select, update

from qr_oidc.keys.keyset import generate, to_row
from qr_oidc.provider.storage.models import SigningKey


class NotReady(RuntimeError):
    """The next key has not been published long enough to sign yet."""


def rotate(database, alg: str, passphrase: str = "", min_published: float = 0.0,
           at: float | None = None) -> str | None:
    """Rotate ``alg``; return the kid that signs now, or None if someone else rotated meanwhile."""
    at = time.time() if at is None else at
    with database.session_factory() as session:
        nxt = session.scalar(
            select(SigningKey)
            .where(SigningKey.alg == alg, SigningKey.status == "next")
            .order_by(SigningKey.created_at)
        )
        if nxt is not None and at - nxt.created_at < min_published:
            wait = int(min_published - (at - nxt.created_at)) + 1
            raise NotReady(
                f"the next {alg} key has been published for {int(at - nxt.created_at)} s; relying "
                f"parties may cache the JWKS longer: rotate again in {wait} s (or --force)"
            )
        if nxt is None:  # nothing published ahead (an old database): make one and use it at once
            nxt = to_row(generate(alg), alg, "next", passphrase)
            session.add(nxt)
            session.flush()
        promoted = session.execute(
            update(SigningKey)
            .where(SigningKey.kid == nxt.kid, SigningKey.status == "next")
            .values(status="active", activated_at=at)
            .execution_options(synchronize_session=False)
        ).rowcount
        if not promoted:
            session.rollback()
            return None
        session.execute(
            update(SigningKey)
            .where(SigningKey.alg == alg, SigningKey.status == "active", SigningKey.kid != nxt.kid)
            .values(status="retired", retired_at=at)
            .execution_options(synchronize_session=False)
        )
        session.add(to_row(generate(alg), alg, "next", passphrase))
        session.commit()
        return nxt.kid


def remove_expired(database, longest_token_ttl: float, at: float | None = None) -> int:
    """Delete retired keys whose every token has expired (retired longer than the longest TTL)."""
    at = time.time() if at is None else at
    with database.session_factory() as session:
        result = session.execute(
            delete(SigningKey).where(
                SigningKey.status == "retired", SigningKey.retired_at < at - longest_token_ttl
            )
        )
        session.commit()
        return result.rowcount or 0


def due(database, alg: str, period: float, at: float | None = None) -> bool:
    """True when the active ``alg`` key has signed for ``period`` seconds (automatic rotation)."""
    at = time.time() if at is None else at
    with database.session_factory() as session:
        activated = session.scalar(
            select(SigningKey.activated_at)
            .where(SigningKey.alg == alg, SigningKey.status == "active")
            .order_by(SigningKey.activated_at.desc())
        )
    return activated is not None and at - activated >= period
