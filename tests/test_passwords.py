"""Password hashes (provider/security.py): scrypt in the stored format earlier versions wrote
with Werkzeug, so hashes already in a database keep working; checked against Werkzeug itself."""

from __future__ import annotations

from werkzeug.security import check_password_hash, generate_password_hash

from qr_oidc.provider.security import check_password, hash_password


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
