"""Approval-to-page latency: a page waits in ``POST /qr/status`` with ``wait``; the phone approves
through ``POST /qr/approve``; how long after the approve response does the page have its answer?

The phone signs in the way the app does (authorization code + PKCE through the hosted login form)
and scans each ticket through the API first; only the approval is timed. The baseline is the round
trip of one plain status request (no ``wait``) on the same server, measured between the samples.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import threading
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NEXT = re.compile(r'name="next" value="([^"]*)"')


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def sign_in_phone(base: str, phone_client: dict, username: str, password: str) -> str:
    """The app's access token with ``qr:approve``, through the hosted login page."""
    session = requests.Session()
    verifier, challenge = _pkce()
    redirect_uri = phone_client["redirect_uris"][0]
    params = {
        "response_type": "code", "client_id": phone_client["client_id"],
        "redirect_uri": redirect_uri, "scope": "openid profile qr:approve",
        "state": secrets.token_hex(8), "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    page = session.get(f"{base}/authorize?{urlencode(params)}", timeout=30)
    if 'name="password"' in page.text:
        response = session.post(f"{base}/login", data={
            "username": username, "password": password,
            "csrf_token": CSRF.search(page.text).group(1),
            "next": NEXT.search(page.text).group(1).replace("&amp;", "&"),
        }, allow_redirects=False, timeout=30)
        if response.status_code != 302:
            raise RuntimeError(f"phone sign-in refused: {response.status_code}")
        page = session.get(base + response.headers["Location"], allow_redirects=False, timeout=30)
    if page.status_code != 302:
        raise RuntimeError(f"authorization did not redirect: {page.status_code}")
    query = parse_qs(urlsplit(page.headers["Location"]).query)
    token = requests.post(base + "/token", data={
        "grant_type": "authorization_code", "code": query["code"][0],
        "redirect_uri": redirect_uri, "client_id": phone_client["client_id"],
        "code_verifier": verifier,
    }, timeout=30)
    token.raise_for_status()
    return token.json()["access_token"]


def measure(base: str, phone_token: str, tickets: list[dict], settle: float = 0.05,
            wait: int = 25, timeout: float = 30, deadline: float | None = None,
            tolerate: bool = False) -> dict:
    """One sample per ticket (pending tickets, secrets known): scan, park a long poll, approve.

    ``timeout``: seconds any one request may take (the page's answer too, counted from the
    approve response). ``tolerate``: a sample that fails (an error, a timeout, a wrong answer) is
    counted in ``failed`` (first messages in ``errors``) instead of raising; ``deadline`` (a
    ``time.monotonic()`` value): no sample starts after it. Both for a server under load that may
    not answer at all (bench/longpoll.py)."""
    page, phone = requests.Session(), requests.Session()
    bearer = {"Authorization": f"Bearer {phone_token}"}
    samples, baseline, errors = [], [], []
    failed = 0
    for item in tickets:
        if deadline is not None and time.monotonic() >= deadline:
            break
        try:
            samples.append(_sample(base, page, phone, bearer, item, settle, wait, timeout,
                                   baseline))
        except (RuntimeError, requests.RequestException, ValueError) as exc:
            if not tolerate:
                raise
            failed += 1
            if len(errors) < 5:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
            # a failed request may leave a connection in a bad state: start afresh
            page.close()
            phone.close()
            page, phone = requests.Session(), requests.Session()
    page.close()
    phone.close()
    return {"samples": samples, "status_round_trip_ms": baseline, "failed": failed,
            "errors": errors}


def _sample(base, page, phone, bearer, item, settle, wait, timeout, baseline) -> dict:
    response = phone.post(base + "/qr/scan", data={"scan_code": item["scan_code"]},
                          headers=bearer, timeout=timeout)
    if response.status_code != 200:
        raise RuntimeError(f"scan failed: {response.status_code} {response.text[:200]}")
    # the baseline: a plain status round trip (the page's cheapest question), three times
    for _ in range(3):
        started = time.perf_counter()
        page.post(base + "/qr/status", data={"ticket": item["ticket"]}, timeout=timeout)
        baseline.append((time.perf_counter() - started) * 1000)

    answer: dict = {}

    def long_poll(item=item, answer=answer):
        # a session of its own: the page's connection, not shared with the phone's thread
        try:
            with requests.Session() as own:
                r = own.post(base + "/qr/status", data={"ticket": item["ticket"], "wait": wait,
                                                         "last_status": "scanned"},
                             timeout=wait + timeout)
                answer["at"] = time.perf_counter()
                answer["status"] = r.json().get("status")
        except (requests.RequestException, ValueError) as exc:
            answer["error"] = f"{type(exc).__name__}: {exc}"

    waiter = threading.Thread(target=long_poll, daemon=True)
    waiter.start()
    time.sleep(settle)  # let the long poll reach the server and park
    sent = time.perf_counter()
    response = phone.post(base + "/qr/approve", data={"scan_code": item["scan_code"]},
                          headers=bearer, timeout=timeout)
    received = time.perf_counter()
    if response.status_code != 200:
        raise RuntimeError(f"approve failed: {response.status_code} {response.text[:200]}")
    waiter.join(timeout)
    if answer.get("status") != "approved":
        raise RuntimeError(f"the long poll answered {answer.get('status')!r}"
                           + (f" ({answer['error']})" if "error" in answer else "")
                           + ("" if answer or not waiter.is_alive() else
                              f" (no answer {timeout:.0f} s after the approval)"))
    return {
        "after_approve_response_ms": (answer["at"] - received) * 1000,
        "after_approve_request_ms": (answer["at"] - sent) * 1000,
        "approve_round_trip_ms": (received - sent) * 1000,
    }
