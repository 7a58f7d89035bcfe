"""A crawler that survives being killed: run it, kill it (Ctrl-C, SIGTERM, even SIGKILL), run it again.

It serves a small site of its own on 127.0.0.1 (a free port; `--site-pages` pages, each linking to a few
others, every response delayed by `--delay-ms`) and crawls it with httpx. The pages done, the frontier
and the counters live in a Pydantic model inside a `RecoverableState`. What grows with every link found
is kept in keyed states, which save only what changed: the counters of each domain (pages fetched, bytes,
links to it) in a `KeyedRecoverableState`, and every URL seen, on this site or another, in a
`RecoverableSet`. All three are saved by a `LocalEventManager` every second
(`RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS` overrides it), on SIGTERM and Ctrl-C, and at the end, to a
file system store under `./storage` (`RECOVERABLE_STORAGE_DIR` overrides it).

Each state is saved as a whole, but the three are saved one after another, not together: what must agree
(a page leaving the frontier for `done`) is kept in one state, and the domain counters and the URLs seen,
which only report, may differ from it by what changed during the last save after a SIGKILL.

A run after a kill prints "resuming: N pages done" and fetches only what was not done at the last
save; a run with nothing saved prints "starting fresh". Pages are kept as paths, not URLs, because the
site gets a new port on every run.

    python examples/resumable_crawler.py            # Ctrl-C it half-way, then run it again
    python examples/resumable_crawler.py --fresh    # forget the saved state and start over
    python examples/resumable_crawler.py | head -3  # stops, saved, once `head` has read its lines

When whoever reads its output stops reading (`| head`), it stops as well, like any program whose output
is cut short: it saves the state, lets go of it, and exits with status 141 (128 + SIGPIPE), without a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Self

import httpx
from pydantic import BaseModel, Field

from recoverable import (
    Configuration,
    Event,
    FileSystemStorageClient,
    KeyedRecoverableState,
    KeyValueStore,
    LocalEventManager,
    RecoverableError,
    RecoverableSet,
    RecoverableState,
    StateValidationError,
)

if TYPE_CHECKING:
    import socket

STORE_NAME = "resumable-crawler"
STATE_KEY = "CRAWL_STATE"
DOMAINS_KEY = "DOMAINS"
SEEN_KEY = "SEEN_URLS"
START_PATH = "/"
DEFAULT_PERSIST_INTERVAL = timedelta(seconds=1)
MAX_ATTEMPTS = 3
PROGRESS_EVERY = 25
_INTERVAL_VARIABLES = (
    "RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS",
    "CRAWLEE_PERSIST_STATE_INTERVAL_MILLIS",
    "APIFY_PERSIST_STATE_INTERVAL_MILLIS",
)
_HREF = re.compile(r"""href\s*=\s*["']([^"'#]+)""", re.IGNORECASE)


# --- output -----------------------------------------------------------------------------------------


def say(line: str = "") -> None:
    """Print a line on stdout at once.

    Raises:
        BrokenPipeError: Whoever read stdout stopped reading (`| head`). Stdout then goes to /dev/null, so
            that nothing else fails on it, Python's last flush at exit included.
    """
    try:
        print(line, flush=True)
    except BrokenPipeError:
        discard_stdout()
        raise


def discard_stdout() -> None:
    """Send what is still to be written on stdout to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


# --- the state --------------------------------------------------------------------------------------


class PageResult(BaseModel):
    """What the crawl learnt from one page."""

    run: int
    """The run that fetched it (1 for the first run, 2 after one restart, ...)."""
    status: int
    depth: int
    size: int
    links: int


class CrawlState(BaseModel):
    """Everything the crawl needs to carry on where it stopped; saved as one JSON record."""

    site_pages: int = 0
    """Size of the site this state belongs to (0 until the first run sets it)."""
    runs: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    done: dict[str, PageResult] = Field(default_factory=dict)
    """Pages fetched, by path."""
    frontier: dict[str, int] = Field(default_factory=dict)
    """Pages found but not done yet (including those being fetched), by path, with their depth."""
    attempts: dict[str, int] = Field(default_factory=dict)
    """Failed attempts of pages in the frontier."""
    failed: dict[str, str] = Field(default_factory=dict)
    """Pages given up after MAX_ATTEMPTS, with the last error."""
    fetches: int = 0
    """HTTP requests made over all runs, retries and re-fetches after a kill included."""
    bytes_fetched: int = 0
    links_found: int = 0


class DomainCounters(BaseModel):
    """What the crawl saw of one domain (a host name, without the port)."""

    pages: int = 0
    """Pages fetched from it."""
    bytes: int = 0
    links_to: int = 0
    """Links found that point to it (followed only on the crawled site)."""


# --- the site ---------------------------------------------------------------------------------------


def page_links(index: int, site_pages: int) -> list[str]:
    """The links of page `index`: the same on every run, so a resumed crawl sees the same site."""
    targets = [(index + 1) % site_pages, (index * 7 + 3) % site_pages, (index * index + 11) % site_pages]
    links = [START_PATH if t == 0 else f"/page/{t}" for t in dict.fromkeys(targets) if t != index]
    if index % 10 == 0:
        # Links the crawler must not follow: another host, and a fragment of this page.
        links += ["http://example.com/elsewhere", f"{START_PATH if index == 0 else f'/page/{index}'}#top"]
    return links


def page_index(path: str, site_pages: int) -> int | None:
    """The page a path names, or None when there is no such page."""
    if path == START_PATH:
        return 0
    match = re.fullmatch(r"/page/(\d+)", path)
    if match is None:
        return None
    index = int(match.group(1))
    return index if 0 < index < site_pages else None


class _QuietServer(ThreadingHTTPServer):
    """The site's server: a crawler gone in the middle of a request (stopped, cut short) is no error."""

    daemon_threads = True

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class Site:
    """A small deterministic site served from a thread on 127.0.0.1, counting what it serves."""

    def __init__(self, *, site_pages: int, delay: float) -> None:
        self.site_pages = site_pages
        self.delay = delay
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="site", daemon=True)

    @property
    def base_url(self) -> str:
        """The root URL of the site, with the port it got."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall
            server_version = "resumable-crawler-site"

            def do_GET(self) -> None:
                with site._lock:
                    site.hits[self.path] += 1
                time.sleep(site.delay)
                index = page_index(self.path, site.site_pages)
                if index is None:
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                links = "".join(f'<li><a href="{href}">{href}</a></li>' for href in page_links(index, site.site_pages))
                body = f"<!doctype html><title>Page {index}</title><h1>Page {index}</h1><ul>{links}</ul>".encode()
                try:
                    self.send_response(HTTPStatus.OK)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except ConnectionError:
                    # The crawler went away mid-request (Ctrl-C): nobody is left to answer.
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# --- the crawler ------------------------------------------------------------------------------------


class Crawler:
    """Fetches the frontier with a few workers, moving each page from the frontier to `done` in one step."""

    def __init__(
        self,
        *,
        state: CrawlState,
        domains: KeyedRecoverableState[DomainCounters],
        seen: RecoverableSet[str],
        client: httpx.AsyncClient,
        concurrency: int,
        max_pages: int | None,
    ) -> None:
        self.state = state
        self.domains = domains
        self.seen = seen
        self.client = client
        self.concurrency = concurrency
        self.max_pages = max_pages
        self.fetched_this_run = 0
        self._in_flight = 0
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    def _limit_reached(self) -> bool:
        return self.max_pages is not None and len(self.state.done) + self._in_flight >= self.max_pages

    async def run(self) -> None:
        """Crawl until the frontier is empty or `max_pages` pages are done.

        Raises:
            Exception: What made a worker fail (BrokenPipeError when stdout was closed, say); the other
                workers are stopped first. Every page is in `done` or in the frontier, never half moved.
        """
        for path in self.state.frontier:
            self._queue.put_nowait(path)
        workers = [asyncio.create_task(self._worker(), name=f"crawler worker {i}") for i in range(self.concurrency)]
        finished = asyncio.create_task(self._queue.join(), name="crawl finished")
        try:
            # A worker that fails ends the crawl: waiting for the queue alone would wait for ever on the
            # pages it left behind.
            await asyncio.wait([finished, *workers], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (finished, *workers):
                task.cancel()
            await asyncio.gather(finished, *workers, return_exceptions=True)
        for worker in workers:
            if not worker.cancelled() and (error := worker.exception()) is not None:
                raise error

    async def _worker(self) -> None:
        while True:
            path = await self._queue.get()
            try:
                await self._crawl(path)
            finally:
                self._queue.task_done()

    async def _crawl(self, path: str) -> None:
        state = self.state
        if path not in state.frontier or self._limit_reached():
            return  # already done, or left in the frontier for a later run with a higher --max-pages
        self._in_flight += 1
        try:
            response = await self.client.get(path)
        except httpx.HTTPError as exc:
            self._count_fetch()
            self._failed(path, f"{type(exc).__name__}: {exc}")
            return
        finally:
            self._in_flight -= 1
        self._count_fetch()
        if response.status_code >= HTTPStatus.INTERNAL_SERVER_ERROR:
            self._failed(path, f"HTTP {response.status_code}")
            return
        # From here to the end nothing awaits, so a save never sees a page half moved.
        depth = state.frontier.pop(path)
        state.attempts.pop(path, None)
        links, found = self._links(response)
        state.done[path] = PageResult(
            run=state.runs, status=response.status_code, depth=depth, size=len(response.content), links=len(links)
        )
        state.bytes_fetched += len(response.content)
        state.links_found += len(links)
        async with self.domains.edit(response.url.host) as counters:
            counters.pages += 1
            counters.bytes += len(response.content)
        for url in found:
            if url not in self.seen:
                self.seen.add(url)
            async with self.domains.edit(httpx.URL(url).host) as counters:
                counters.links_to += 1
        for link in links:
            if link not in state.done and link not in state.frontier and link not in state.failed:
                state.frontier[link] = depth + 1
                self._queue.put_nowait(link)
        if len(state.done) % PROGRESS_EVERY == 0:
            say(f"progress: {len(state.done)} pages done, {len(state.frontier)} in the frontier")

    def _count_fetch(self) -> None:
        # Only requests that got an answer or an error: one cancelled by Ctrl-C is not a fetch.
        self.fetched_this_run += 1
        self.state.fetches += 1

    def _failed(self, path: str, error: str) -> None:
        attempts = self.state.attempts.get(path, 0) + 1
        if attempts < MAX_ATTEMPTS:
            self.state.attempts[path] = attempts
            self._queue.put_nowait(path)
            return
        self.state.attempts.pop(path, None)
        self.state.frontier.pop(path, None)
        self.state.failed[path] = error
        say(f"giving up on {path} after {attempts} attempts: {error}")

    def _links(self, response: httpx.Response) -> tuple[list[str], list[str]]:
        """Same-site links of a page, as paths, and every link found, as URLs: the URLs seen.

        Paths, and URLs of this site without the port: the port changes between runs, paths do not.
        """
        if not response.headers.get("content-type", "").startswith("text/html"):
            return [], []
        base = response.url
        same_site: dict[str, None] = {}
        found: dict[str, None] = {}
        for href in _HREF.findall(response.text):
            url = base.join(href.strip())
            if url.scheme == base.scheme and url.host == base.host and url.port == base.port:
                same_site[url.raw_path.decode("ascii")] = None
                url = url.copy_with(port=None)
            found[str(url.copy_with(fragment=None))] = None
        return list(same_site), list(found)


# --- the program ------------------------------------------------------------------------------------


def persist_interval(configuration: Configuration) -> timedelta:
    """One second, unless the environment sets the persist interval."""
    if any(variable in os.environ for variable in _INTERVAL_VARIABLES):
        return configuration.persist_state_interval
    return DEFAULT_PERSIST_INTERVAL


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--fresh", action="store_true", help="forget the saved state and start over")
    parser.add_argument("--max-pages", type=int, default=None, help="stop when this many pages are done in total")
    parser.add_argument("--site-pages", type=int, default=300, help="size of the site to crawl (default 300)")
    parser.add_argument("--delay-ms", type=float, default=50, help="delay of every response (default 50)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests at a time (default 4)")
    args = parser.parse_args(argv)
    if args.max_pages is not None and args.max_pages < 1:
        parser.error("--max-pages must be at least 1")
    if args.site_pages < 1:
        parser.error("--site-pages must be at least 1")
    if args.delay_ms < 0:
        parser.error("--delay-ms must not be negative")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def print_summary(state: CrawlState, crawler: Crawler, site: Site, done_at_start: set[str], seconds: float) -> None:
    """Say what this run did and where the whole crawl stands."""
    refetched = sorted(path for path in site.hits if path in done_at_start)
    fetched_twice = sorted(path for path, hits in site.hits.items() if hits > 1 and path not in state.failed)
    runs = Counter(result.run for result in state.done.values())
    status = "finished" if not state.frontier else f"stopped with {len(state.frontier)} pages in the frontier"
    say(f"summary: crawl {status}")
    say(f"  pages done:            {len(state.done)} of {state.site_pages} (failed: {len(state.failed)})")
    say(f"  pages done per run:    {', '.join(f'run {run}: {n}' for run, n in sorted(runs.items()))}")
    say(f"  fetched this run:      {crawler.fetched_this_run} in {seconds:.1f} s")
    say(f"  re-fetched, were done: {len(refetched)}")
    say(f"  fetched twice:         {len(fetched_twice)}")
    say(f"  fetches in all runs:   {state.fetches} (runs: {state.runs})")
    say(f"  bytes fetched:         {state.bytes_fetched}")
    say(f"  links found:           {state.links_found}")
    say(f"  deepest page:          {max((r.depth for r in state.done.values()), default=0)}")
    say(f"  URLs seen:             {len(crawler.seen)}")
    for domain, counters in sorted(crawler.domains.items()):
        say(f"  domain {domain}: {counters.pages} pages, {counters.bytes} bytes, {counters.links_to} links to it")


async def crawl(args: argparse.Namespace) -> int:
    """Run one crawl session; return the exit status."""
    configuration = Configuration.from_env()
    storage = FileSystemStorageClient(configuration=configuration)
    store = await KeyValueStore.open(name=STORE_NAME, storage_client=storage)
    interval = persist_interval(configuration)
    say(f"storage: {storage.storage_dir.resolve()} (store {STORE_NAME!r}, key {STATE_KEY!r})")
    say(f"saving every {interval.total_seconds():g} s, on SIGTERM and Ctrl-C, and at the end")

    def on_stop() -> None:
        with contextlib.suppress(BrokenPipeError):  # stopping anyway
            say("stopping: saving the state; run again to resume")

    async with LocalEventManager(persist_state_interval=interval, configuration=configuration) as events:
        events.on(event=Event.MIGRATING, listener=on_stop)
        events.on(event=Event.ABORTING, listener=on_stop)
        recoverable = RecoverableState(
            default_state=CrawlState(frontier={START_PATH: 0}),
            persist_state_key=STATE_KEY,
            key_value_store=store,
            event_manager=events,
            # With --fresh, a saved state that no longer loads is kept aside as a backup, not an error.
            on_invalid="reset" if args.fresh else "raise",
        )
        # Per-domain counters and the URLs seen grow with the crawl: saved as what changed since the last save.
        domains = KeyedRecoverableState(
            value_type=DomainCounters, persist_state_key=DOMAINS_KEY, key_value_store=store, event_manager=events
        )
        seen: RecoverableSet[str] = RecoverableSet(
            persist_state_key=SEEN_KEY, key_value_store=store, event_manager=events
        )
        async with recoverable, domains, seen:
            if args.fresh:
                await recoverable.reset()
                await domains.reset()
                await seen.reset()
            state = recoverable.current_value
            if state.runs == 0:
                say("starting fresh")
                state.site_pages = args.site_pages
                state.started_at = datetime.now(UTC)
            elif state.site_pages != args.site_pages:
                print(
                    f"the saved crawl is of a site of {state.site_pages} pages, not {args.site_pages}: "
                    "pass the same --site-pages, or --fresh to start over",
                    file=sys.stderr,
                )
                return 2
            else:
                say(f"resuming: {len(state.done)} pages done, {len(state.frontier)} in the frontier")
            state.runs += 1
            done_at_start = set(state.done)
            started = time.monotonic()
            with Site(site_pages=args.site_pages, delay=args.delay_ms / 1000) as site:
                async with httpx.AsyncClient(
                    base_url=site.base_url,
                    trust_env=False,  # never through a proxy: the site is on this machine
                    timeout=httpx.Timeout(10.0),
                    limits=httpx.Limits(max_connections=args.concurrency),
                ) as client:
                    crawler = Crawler(
                        state=state,
                        domains=domains,
                        seen=seen,
                        client=client,
                        concurrency=args.concurrency,
                        max_pages=args.max_pages,
                    )
                    await crawler.run()
            if not state.frontier:
                state.finished_at = state.finished_at or datetime.now(UTC)
            print_summary(state, crawler, site, done_at_start, time.monotonic() - started)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the crawler; Ctrl-C saves the state and exits with status 130, a closed stdout with 141."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        return asyncio.run(crawl(args))
    except KeyboardInterrupt:
        print("interrupted: the state is saved; run again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`| head`): the state was saved on the way out. End as a program
        # whose output is cut short does, with the status of SIGPIPE, and quietly.
        discard_stdout()
        return 128 + signal.SIGPIPE
    except StateValidationError as exc:
        print(f"error: {exc}\nrun with --fresh to start over", file=sys.stderr)
        return 1
    except RecoverableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
