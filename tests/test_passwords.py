"""Password hashes (provider/security.py): scrypt in the stored format earlier versions wrote
with Werkzeug, so hashes already in a database keep working; checked against Werkzeug itself.
Their cost is a setting (``PASSWORD_COST``, log2 of scrypt's N); a sign-in stores a password
made with less again with the configured cost."""

from __future__ import annotations

import json

import pytest
from werkzeug.security import check_password_hash, generate_password_hash

from qr_oidc.provider.security import check_password, hash_password, needs_rehash

from helpers import csrf_of, run_cli


def test_round_trip_and_format():
    stored = hash_password("correct horse ☃")
    method, salt, digest = stored.split("$")
    assert method == "scrypt:32768:8:1" and len(salt) == 16 and len(digest) == 128
    assert check_password(stored, "correct horse ☃")
    assert not check_password(stored, "correct horse")
    assert hash_password("x") != hash_password("x")  # salted


def test_werkzeug_reads_ours_and_we_read_werkzeugs():
    ours = hash_password("pw")
    assert check_password_hash(ours, "pw") and not check_password_hash(ours, "other")
    theirs = generate_password_hash("pw", method="scrypt")
    assert check_password(theirs, "pw") and not check_password(theirs, "other")
    old = generate_password_hash("pw", method="pbkdf2:sha256:1000")
    assert check_password(old, "pw") and not check_password(old, "PW")


def test_malformed_hashes_are_refused_not_raised():
    for stored in ("", "plain", "scrypt$salt", "md5$s$abc", "scrypt:x:8:1$s$ab",
                   "scrypt:1073741824:8:1$s$ab", "pbkdf2:nohash:1000$s$ab", None):
        assert check_password(stored, "pw") is False


def test_the_cost_is_scrypts_n_and_a_weaker_hash_needs_a_new_one():
    cheap = hash_password("pw", 12)
    assert cheap.startswith("scrypt:4096:8:1$") and check_password(cheap, "pw")
    assert hash_password("pw").startswith("scrypt:32768:8:1$")  # the default: 15
    assert needs_rehash(cheap, 13) and not needs_rehash(cheap, 12)
    assert not needs_rehash(hash_password("pw", 13), 12)  # a stronger one is kept
    assert needs_rehash(generate_password_hash("pw", method="pbkdf2:sha256:1000"), 12)
    assert not needs_rehash(generate_password_hash("pw", method="scrypt"), 15)  # Werkzeug's N


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_sign_in_stores_a_cheaper_password_again_with_the_configured_cost(make_in_process,
                                                                            backend):
    app = make_in_process({"PASSWORD_COST": "13"}, backend=backend)
    # made when the setting was lower (the CLI hashes with the cost it is given)
    made = run_cli(["users", "create", "--username", "olga", "--password", "olga-password",
                    "--json"], {**app.env, "QR_OIDC_PASSWORD_COST": "12"})
    assert made.returncode == 0, made.stderr
    sub = json.loads(made.stdout)["sub"]

    def stored() -> str:
        return app.db("SELECT password_hash FROM users WHERE sub = ?", sub)[0][0]

    assert stored().startswith("scrypt:4096:8:1$")
    browser = app.client()

    def sign_in(password: str) -> int:
        page = browser.get("/login").get_data(as_text=True)
        return browser.post("/login", data={"username": "olga", "password": password,
                                            "csrf_token": csrf_of(page)}).status_code

    assert sign_in("wrong") == 401
    assert stored().startswith("scrypt:4096:8:1$")  # a wrong password changes nothing
    assert sign_in("olga-password") == 302
    again = stored()
    assert again.startswith("scrypt:8192:8:1$") and check_password(again, "olga-password")
    assert sign_in("olga-password") == 302
    assert stored() == again  # made once: now it has the cost asked for
