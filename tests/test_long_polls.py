"""Status long polls on the event loop (provider/web/events.py): many held at once without holding
anything else up, at most four per ticket, a ceiling per process, and a clear answer past each
(at once, then one a second per address, so a flood paces itself).

The long polls are raw HTTP/1.1 connections from an asyncio client, so a test holds thousands
without a thread each. No timing is asserted: "held" means not answered while the others were
(and answered once its ticket changed), "at once" means answered before anything changed.
bench/ measures how fast (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import phone_app
from helpers import Provider, approved_ticket, sign_in_phone

WAIT = "20"  # long enough that no held poll times out during a test


def _more_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class LongPoll:
    """One POST /qr/status on a connection of its own."""

    def __init__(self, port: int, ticket: str, last: str = "pending", wait: str = WAIT):
        self.port = port
        self.body = f"ticket={ticket}&wait={wait}&last_status={last}".encode()
        self.answer: asyncio.Task | None = None
        self.writer = None

    async def open(self) -> LongPoll:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(b"POST /qr/status HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: application/x-www-form-urlencoded\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(self.body) + self.body)
        await self.writer.drain()
        self.answer = asyncio.ensure_future(self._read(reader))
        return self

    @staticmethod
    async def _read(reader) -> tuple[int, dict]:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = int(head.split(" ", 2)[1])
        length = next(int(line.split(":", 1)[1]) for line in head.split("\r\n")
                      if line.lower().startswith("content-length:"))
        return status, json.loads(await reader.readexactly(length))

    def close(self) -> None:
        if self.answer is not None:
            self.answer.cancel()
        if self.writer is not None:
            self.writer.close()


async def open_all(port: int, tickets: list[str], **kwargs) -> list[LongPoll]:
    polls = []
    for start in range(0, len(tickets), 200):  # not all SYNs at once: the listen backlog
        polls += await asyncio.gather(*(LongPoll(port, t, **kwargs).open()
                                        for t in tickets[start:start + 200]))
    return polls


async def settle(polls: list[LongPoll], seconds: float = 3.0) -> None:
    """Give the server time to answer whatever it answers at once."""
    await asyncio.wait([p.answer for p in polls], timeout=seconds)


def answered(polls: list[LongPoll]) -> list[tuple[int, dict]]:
    return [p.answer.result() for p in polls if p.answer.done()]


async def in_thread(function, *args):
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    _more_open_files()
    provider = Provider(tmp_path_factory.mktemp("long-polls"), backend=request.param)
    provider.start()
    try:
        web = provider.create_client("--name", "Long poll shop")
        phone = phone_app(provider)
        provider.create_user("carol", "carol-password", name="Carol")
        token = sign_in_phone(provider, phone, "carol", "carol-password")["access_token"]
        yield provider, web, token
    finally:
        provider.stop()


def test_one_ticket_holds_four_long_polls_and_answers_more_at_once_one_a_second(server):
    provider, web, phone = server
    ticket = provider.ticket(web)

    async def scenario():
        polls = await open_all(provider.port, [ticket["ticket"]] * 10)
        opened = time.monotonic()
        times = {}

        def note(poll):
            poll.answer.add_done_callback(lambda _f: times.setdefault(poll, time.monotonic()))

        for poll in polls:
            note(poll)
        await settle(polls, 9.0)
        at_once = answered(polls)
        spread = sorted(times.values())
        held = [p for p in polls if not p.answer.done()]
        scanned = await in_thread(lambda: provider.phone(
            "scan", phone, scan_code=provider.scan_code(ticket)))
        await asyncio.wait([p.answer for p in held], timeout=15)
        woken = answered(held)
        for poll in polls:
            poll.close()
        return at_once, held, scanned, woken, spread, opened

    at_once, held, scanned, woken, spread, opened = asyncio.run(scenario())
    assert len(held) == 4
    assert len(at_once) == 6
    # the first went at once; the others from this address one a second after it
    assert spread[-1] - spread[0] >= 4.5
    assert spread[0] - opened < spread[-1] - spread[0]
    assert all(status == 200 and body["status"] == "pending" for status, body in at_once)
    assert scanned.status_code == 200
    assert len(woken) == 4
    assert all(status == 200 and body["status"] == "scanned" and body["user"]["name"] == "Carol"
               for status, body in woken)


def test_a_flood_on_one_ticket_holds_up_nobody_else(server):
    """300 connections long-polling one ticket, each renewing as soon as it is answered, while
    a relying party and a phone go on with their own logins."""
    provider, web, phone = server
    target = provider.ticket(web)
    stop = False
    renewals = 0

    async def flood_one():
        nonlocal renewals
        while not stop:  # a new connection each time: reconnecting does not escape the pace
            poll = await LongPoll(provider.port, target["ticket"]).open()
            try:
                await asyncio.wait_for(asyncio.shield(poll.answer), timeout=2.0)
                renewals += 1
            except asyncio.TimeoutError:
                pass  # held, or waiting its turn
            finally:
                poll.close()

    def others():
        results = []
        session = requests.Session()
        for _ in range(3):
            results.append(session.get(provider.url + "/.well-known/openid-configuration",
                                       timeout=10).status_code)
            created = provider.create_ticket(web)
            results.append(created.status_code)
            own = created.json()
            results.append(provider.poll(web, own["ticket"]).json()["error"])
            done = approved_ticket(provider, web, phone)
            results.append(provider.poll(web, done["ticket"]).status_code)
        return results

    async def scenario():
        nonlocal stop
        flooders = [asyncio.ensure_future(flood_one()) for _ in range(300)]
        started = time.monotonic()
        await asyncio.sleep(2)
        results = await in_thread(others)
        stop = True
        await asyncio.wait(flooders, timeout=30)
        return results, time.monotonic() - started

    results, lasted = asyncio.run(scenario())
    assert results == [200, 201, "authorization_pending", 200] * 3
    # the flood got answers, one a second from its one address, not one per request
    assert 1 <= renewals <= lasted + 3
    # the server is still itself: the ticket answers and can still be used
    assert provider.status(target["ticket"]).json()["status"] == "pending"


def test_thousands_of_long_polls_are_held_and_only_the_changed_ticket_answers(server):
    provider, web, phone = server
    count = 2000
    with ThreadPoolExecutor(8) as pool:
        tickets = list(pool.map(lambda _: provider.ticket(web), range(count)))

    async def scenario():
        polls = await open_all(provider.port, [t["ticket"] for t in tickets])
        await settle(polls, 2.0)
        early = answered(polls)
        # meanwhile everything else answers
        discovery = await in_thread(lambda: requests.get(
            provider.url + "/.well-known/openid-configuration", timeout=10).status_code)
        fresh = await in_thread(provider.ticket, web)
        pending = await in_thread(lambda: provider.poll(web, fresh["ticket"]).json()["error"])
        # one ticket is scanned: its long poll answers, and no other
        chosen = 1234
        scanned = await in_thread(lambda: provider.phone(
            "scan", phone, scan_code=provider.scan_code(tickets[chosen])).status_code)
        await asyncio.wait([polls[chosen].answer], timeout=15)
        await settle(polls, 1.0)
        woken = [i for i, p in enumerate(polls) if p.answer.done()]
        result = polls[chosen].answer.result() if polls[chosen].answer.done() else None
        for poll in polls:
            poll.close()
        return early, discovery, pending, scanned, woken, result

    early, discovery, pending, scanned, woken, result = asyncio.run(scenario())
    assert early == []
    assert (discovery, pending, scanned) == (200, "authorization_pending", 200)
    assert woken == [1234]
    assert result[0] == 200 and result[1]["status"] == "scanned"


def test_past_the_process_ceiling_a_long_poll_answers_at_once_and_a_leaving_one_frees_its_place(
        tmp_path):
    _more_open_files()
    provider = Provider(tmp_path, {"QR_OIDC_LONG_POLL_LIMIT": "20"})
    provider.start()
    try:
        web = provider.create_client("--name", "Ceiling shop")
        tickets = [provider.ticket(web)["ticket"] for _ in range(26)]

        async def scenario():
            held = await open_all(provider.port, tickets[:20])
            await settle(held, 2.0)
            assert answered(held) == []
            extra = await open_all(provider.port, tickets[20:23])
            await settle(extra, 5.0)
            past = answered(extra)
            for poll in held[:3]:  # three pages close: their places are free again
                poll.close()
            await asyncio.sleep(1.0)
            again = await open_all(provider.port, tickets[23:26])
            await settle(again, 2.0)
            later = answered(again)
            for poll in held + again:
                poll.close()
            return past, later

        past, later = asyncio.run(scenario())
        assert len(past) == 3
        assert all(status == 200 and body["status"] == "pending" for status, body in past)
        assert later == []
    finally:
        provider.stop()


def test_stopping_the_server_answers_the_held_long_polls_and_those_waiting_their_turn(tmp_path):
    """SIGTERM answers every long poll at once: the held ones, and the unheld ones of a flood
    that wait their turn (one a second per address, for up to their own ``wait``: here the
    last would wait about 25 s) instead of keeping the process alive until they are due."""
    provider = Provider(tmp_path)
    provider.start()
    try:
        web = provider.create_client("--name", "Stopping shop")
        tickets = [provider.ticket(web)["ticket"] for _ in range(5)]
        flooded = provider.ticket(web)["ticket"]

        async def scenario():
            polls = await open_all(provider.port, tickets)
            # four held on one ticket, one more answered at once, 25 waiting their turn
            flood = await open_all(provider.port, [flooded] * 30, wait="60")
            await settle(polls + flood, 1.5)
            assert answered(polls) == []
            early = len(answered(flood))
            await in_thread(provider.stop)
            await settle(polls + flood, 10.0)
            return answered(polls), early, answered(flood), provider.proc.returncode

        answers, early, flood_answers, code = asyncio.run(scenario())
        assert len(answers) == 5
        assert all(status == 200 and body["status"] == "pending" for status, body in answers)
        assert early <= 3  # the one answered at once, and one a second after it
        assert len(flood_answers) == 30
        assert all(status == 200 and body["status"] == "pending"
                   for status, body in flood_answers)
        # it stopped by itself (uvicorn ends by raising the signal it stopped for again), not
        # killed with SIGKILL once the 15 s grace of ``Provider.stop`` was over
        assert code in (0, -signal.SIGTERM), code
    finally:
        provider.stop()
