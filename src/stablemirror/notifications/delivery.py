"""Delivery of the outbox: in every worker process, one sender per endpoint. Each takes the
endpoint's lease (index/sql_notifications.py) to send its oldest events, so across workers
and replicas one sender at a time sends an endpoint's events, in order; a failed request is
retried after an exponential backoff; a sender that dies is taken over when its lease
expires (docs/notifications.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

import aiohttp

from stablemirror.index.sql_notifications import SqlOutbox
from stablemirror.metrics import Metrics
from stablemirror.notifications.backoff import retry_delay
from stablemirror.notifications.config import EndpointSettings, NotificationSettings
from stablemirror.notifications.envelope import MEDIA_TYPE, envelope
from stablemirror.notifications.signature import HEADER, sign

log = logging.getLogger("stablemirror.notifications")
STATS_EVERY_POLLS = 5  # gauges from the index every this many polls (one GROUP BY)


class Deliverer:
    def __init__(self, settings: NotificationSettings, outbox: SqlOutbox, metrics: Metrics,
                 replica: str, user_agent: str) -> None:
        self.settings = settings
        self.outbox = outbox
        self.metrics = metrics
        self.replica = replica
        self.owner = ""  # <replica>:<pid> in the endpoint leases, set by run() in its process
        self.user_agent = user_agent
        self._wakes = {e.name: asyncio.Event() for e in settings.endpoints}
        for e in settings.endpoints:
            metrics.notification_endpoint(e.name)

    def wake(self, endpoint: str) -> None:
        event = self._wakes.get(endpoint)
        if event is not None:
            event.set()

    async def run(self) -> None:
        """Every endpoint's sender and the gauges, until cancelled (Background.run)."""
        self.owner = f"{self.replica}:{os.getpid()}"  # each forked worker is its own owner
        names = [e.name for e in self.settings.endpoints]
        while True:  # an index down at start-up delays deliveries, it does not end them
            try:
                await self.outbox.ensure_endpoints(names)
                break
            except Exception:
                log.exception("notifications: the outbox could not be prepared; retrying")
                await asyncio.sleep(self.settings.poll_seconds)
        async with aiohttp.ClientSession() as session:
            senders = [asyncio.create_task(self._send_loop(session, e), name=f"notify-{e.name}")
                       for e in self.settings.endpoints]
            try:
                await self._stats_loop(names)
            finally:
                for task in senders:
                    task.cancel()
                await asyncio.gather(*senders, return_exceptions=True)
                for name in names:  # the next sender need not wait for the lease to expire
                    with contextlib.suppress(Exception):
                        await self.outbox.release(name, self.owner)

    async def _stats_loop(self, names: list[str]) -> None:
        while True:
            try:
                now = time.time()
                for state in await self.outbox.states(names):
                    age = now - state.oldest_created_at if state.oldest_created_at else 0.0
                    self.metrics.notifications_queued(state.endpoint, state.pending,
                                                      max(0.0, age))
            except Exception:
                log.exception("notification gauges: the outbox could not be read")
            await asyncio.sleep(self.settings.poll_seconds * STATS_EVERY_POLLS)

    async def _idle(self, name: str) -> None:
        wake = self._wakes[name]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), self.settings.poll_seconds)
        wake.clear()

    async def _send_loop(self, session: aiohttp.ClientSession, endpoint: EndpointSettings
                         ) -> None:
        while True:
            try:
                sent = await self.send_once(session, endpoint)
            except Exception:
                log.exception("notifications endpoint %s: the outbox could not be read",
                              endpoint.name)
                sent = False
            if not sent:
                await self._idle(endpoint.name)

    async def send_once(self, session: aiohttp.ClientSession, endpoint: EndpointSettings
                        ) -> bool:
        """Send the endpoint's next batch if it is due and ours to send; True if sent."""
        batch = await self.outbox.claim(endpoint.name, self.owner, self.settings.lease_seconds,
                                        endpoint.batch_size)
        if not batch:
            return False
        body = envelope([d.body for d in batch])
        ids = [d.id for d in batch]
        error = await self._post(session, endpoint, body)
        if error is None:
            await self.outbox.delivered(endpoint.name, self.owner, ids)
            self.metrics.notification_delivered(endpoint.name, len(batch))
            return True
        self.metrics.notification_failed(endpoint.name)
        wait = await self.outbox.failed(
            endpoint.name, self.owner, ids, error,
            lambda n: retry_delay(n, endpoint.backoff_seconds, endpoint.backoff_max_seconds))
        log.warning("notifications endpoint %s: %s; %d events retried in %.1fs",
                    endpoint.name, error, len(batch), wait)
        return False

    async def _post(self, session: aiohttp.ClientSession, endpoint: EndpointSettings,
                    body: bytes) -> str | None:
        """None when the endpoint took the body (2xx), else what went wrong, in words."""
        headers = {name: value.get_secret_value() for name, value in endpoint.headers.items()}
        headers.update({"Content-Type": MEDIA_TYPE, "User-Agent": self.user_agent})
        if endpoint.secret is not None:
            headers[HEADER] = sign(endpoint.secret.get_secret_value().encode(), body)
        try:
            async with session.post(endpoint.url, data=body, headers=headers,
                                    allow_redirects=False,
                                    timeout=aiohttp.ClientTimeout(
                                        total=endpoint.timeout_seconds)) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {endpoint.timeout_seconds}s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"
