"""Progress where work is long: ``qr-oidc db upgrade`` (one step per migration), ``qr-oidc keys
rotate --wait`` (a countdown until the next key has been published long enough, then the
rotation) and bench/run's timed runs. On a terminal (a pseudo-terminal here, as a real one) a bar
is drawn; without one, the output is plain lines with no control characters, so that logs and
tests stay clean."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qr_oidc.provider.storage import migrate

from helpers import BIN, create_pg_database, drop_pg_database, run_cli

ROOT = Path(__file__).resolve().parent.parent
BAR = re.compile(r"\[#+-*\]")  # click's bar: "[#####-----]"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but text, tab and newline

# a next key may sign once published for JWKS max-age + 2 x key refresh: 5 s here (short, and
# still longer than two CLI commands take on a busy machine)
SHORT_WAIT = {"QR_OIDC_JWKS_MAX_AGE": "3", "QR_OIDC_KEY_REFRESH": "1"}
MIN_PUBLISHED = 5


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, tmp_path):
    """A database of its own, SQLite or PostgreSQL (dropped afterwards)."""
    url = f"sqlite:///{tmp_path / 'qr-oidc.db'}" if request.param == "sqlite" \
        else create_pg_database()
    try:
        yield {**os.environ, "QR_OIDC_DATABASE_URL": url, "QR_OIDC_LOG_LEVEL": "warning",
               **SHORT_WAIT}
    finally:
        if request.param == "postgresql":
            drop_pg_database(url)


def in_terminal(args: list[str], env: dict, timeout: float = 60) -> tuple[int, str]:
    """Run ``args`` with standard input, output and error on a pseudo-terminal; what it drew."""
    leader, follower = os.openpty()
    proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower,
                            env={**env, "TERM": "xterm", "COLUMNS": "160"}, close_fds=True,
                            start_new_session=True)
    os.close(follower)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: every end of the terminal is closed
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"{args} did not finish in {timeout} s: {out!r}")
        return proc.wait(10), out.decode(errors="replace")
    finally:
        os.close(leader)


def plain(text: str) -> None:
    assert not CONTROL.search(text), f"control characters in {text!r}"


def keys(env: dict) -> list[dict]:
    return json.loads(run_cli(["keys", "list", "--json"], env).stdout)


def kid(listed: list[dict], alg: str, status: str) -> str:
    return next(k["kid"] for k in listed if k["alg"] == alg and k["status"] == status)


# -- db upgrade ------------------------------------------------------------------------------------
def test_db_upgrade_on_a_terminal_draws_a_bar_over_the_migrations(env):
    code, drawn = in_terminal([BIN, "db", "upgrade"], env)
    assert code == 0, drawn
    assert "db upgrade" in drawn and BAR.search(drawn), drawn
    assert "\r" in drawn  # redrawn in place
    steps = len(migrate._steps(None, "head"))
    assert f"{steps}/{steps}" in drawn, drawn
    assert "0001 -> 0002" in drawn, drawn
    assert f"schema: empty -> {migrate.head()}" in drawn


def test_db_upgrade_without_a_terminal_prints_one_plain_line_per_migration(env):
    result = run_cli(["db", "upgrade", "--revision", "0003"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "schema: empty -> 0003\n"
    assert result.stderr.splitlines() == [
        line for line in result.stderr.splitlines() if line.startswith("migration ")]
    assert [line.split(":")[1].split()[:3] for line in result.stderr.splitlines()] == [
        ["empty", "->", "0001"], ["0001", "->", "0002"], ["0002", "->", "0003"]]
    assert result.stderr.startswith("migration 1 of 3: empty -> 0001 ")
    # the rest of the way: one line per migration left, numbered from 1 again
    result = run_cli(["db", "upgrade"], env)
    assert result.returncode == 0, result.stderr
    left = migrate._steps("0003", "head")
    lines = result.stderr.splitlines()
    assert len(lines) == len(left) and lines[0].startswith(f"migration 1 of {len(left)}: 0003 -> ")
    assert result.stdout == f"schema: 0003 -> {migrate.head()}\n"
    plain(result.stdout + result.stderr)
    # nothing to do: no step, the same one line as before
    again = run_cli(["db", "upgrade"], env)
    assert again.stderr == "" and again.stdout == f"schema: {migrate.head()} -> {migrate.head()}\n"


def test_db_upgrade_to_an_unknown_revision_is_one_error_line(env):
    result = run_cli(["db", "upgrade", "--revision", "nonsense"], env)
    assert result.returncode != 0
    assert result.stderr.startswith("qr-oidc: error: upgrade failed:")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# -- keys rotate --wait ----------------------------------------------------------------------------
def test_keys_rotate_wait_waits_for_the_next_key_then_rotates(env):
    keys(env)  # (the first use makes the keys)
    # a rotation publishes a brand-new next key: rotating again now is refused ...
    assert run_cli(["keys", "rotate", "--alg", "RS256", "--force"], env).returncode == 0
    refused = run_cli(["keys", "rotate", "--alg", "RS256"], env)
    assert refused.returncode != 0 and "rotate again in" in refused.stderr
    # ... and waited for with --wait
    before = keys(env)
    started = time.monotonic()
    result = run_cli(["keys", "rotate", "--alg", "RS256", "--wait"], env)
    waited = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert waited < 30, waited
    after = keys(env)
    assert kid(after, "RS256", "active") == kid(before, "RS256", "next")
    assert kid(after, "RS256", "next") not in {k["kid"] for k in before}
    assert ([k for k in after if k["alg"] != "RS256"]
            == [k for k in before if k["alg"] != "RS256"])  # only --alg's
    assert f"RS256: {kid(before, 'RS256', 'next')} signs now" in result.stdout
    # without a terminal: one plain line saying how long, no countdown
    assert result.stderr.startswith("waiting ") and len(result.stderr.splitlines()) == 1
    assert "RS256" in result.stderr
    plain(result.stdout + result.stderr)


def test_keys_rotate_wait_on_a_terminal_counts_down_with_a_bar(env):
    assert run_cli(["keys", "rotate", "--force"], env).returncode == 0  # brand-new next keys
    before = keys(env)
    code, drawn = in_terminal([BIN, "keys", "rotate", "--wait"], env)
    assert code == 0, drawn
    assert BAR.search(drawn) and "published long enough in" in drawn, drawn
    assert re.search(r"\] +[1-5] s", drawn), drawn  # the seconds left
    after = keys(env)
    for alg in ("RS256", "ES256", "EdDSA"):  # every algorithm, after one wait
        assert kid(after, alg, "active") == kid(before, alg, "next")


def test_keys_rotate_wait_does_not_wait_when_the_next_key_is_old_enough(env):
    keys(env)
    time.sleep(MIN_PUBLISHED + 0.5)
    started = time.monotonic()
    result = run_cli(["keys", "rotate", "--alg", "EdDSA", "--wait"], env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and time.monotonic() - started < 10
    assert "--wait" in run_cli(["keys", "rotate", "--help"], env).stdout


# -- bench/run -------------------------------------------------------------------------------------
BENCH_PROGRESS = """
import time
from bench import progress
steps = progress.Steps(2, lambda m: print("bench:", m, flush=True))
steps("first")
with progress.timed("ours c=8", 1.0):
    time.sleep(1.2)
steps("second")
"""


def test_bench_steps_and_a_bar_per_timed_run_on_a_terminal(env):
    code, drawn = in_terminal([sys.executable, "-c", BENCH_PROGRESS], {**env, "PYTHONPATH":
                                                                       str(ROOT)})
    assert code == 0, drawn
    assert "step 1 of 2: first" in drawn and "step 2 of 2: second" in drawn
    assert "ours c=8" in drawn and BAR.search(drawn), drawn


def test_bench_steps_without_a_terminal_are_plain_lines(env):
    result = subprocess.run([sys.executable, "-c", BENCH_PROGRESS], capture_output=True,
                            text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "bench: step 1 of 2: first\nbench: step 2 of 2: second\n"
    assert result.stderr == ""
