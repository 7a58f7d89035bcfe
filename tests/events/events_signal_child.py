"""Child process of the signal tests: `python events_signal_child.py MODE RECORD_FILE`.

It enters a `LocalEventManager` (hour-long timers, so only signals and the exit emit events), records
every event it receives as one JSON line in RECORD_FILE, prints "ready" and waits. Modes:

- `handle`: the manager handles signals. The PERSIST_STATE listener is async and sleeps before writing,
  so its line only exists if the manager waited for it before letting the signal through.
- `no-signals`: `handle_signals=False`.
- `hang`: like `handle`, but the MIGRATING and ABORTING listeners never finish.
- `loop-handler`: the program installed its own SIGTERM handler with `loop.add_signal_handler()` first;
  the handler records itself and ends the program, which then exits with status 3.

The program is run with `asyncio.run()`, and nothing catches KeyboardInterrupt.
"""

import asyncio
import json
import signal
import sys
from datetime import timedelta
from pathlib import Path

from recoverable.events import (
    Event,
    EventMigratingData,
    EventPersistStateData,
    LocalEventManager,
)

HOUR = timedelta(hours=1)


def main() -> None:
    mode, record_file = sys.argv[1], Path(sys.argv[2])
    # A process started in the background by a non-interactive shell inherits SIGINT ignored, and Python
    # keeps it so; behave as a program started from a terminal, with Python's usual SIGINT handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    asyncio.run(run(mode, record_file))
    if mode == "loop-handler":
        sys.exit(3)


async def run(mode: str, record_file: Path) -> None:
    seen: list[str] = []

    def record(**line: object) -> None:
        with record_file.open("a") as f:
            f.write(json.dumps(line) + "\n")

    def on_migrating(data: EventMigratingData) -> None:
        seen.append("migrating")
        record(event="migrating", time_remaining_secs=data.time_remaining_secs)

    def on_aborting() -> None:
        seen.append("aborting")
        record(event="aborting")

    async def hang() -> None:
        await asyncio.sleep(3600)

    async def on_persist_state(data: EventPersistStateData) -> None:
        after = seen[-1] if seen else None
        seen.append("persistState")
        await asyncio.sleep(0.3)
        record(event="persistState", is_migrating=data.is_migrating, after=after)

    stop = asyncio.Event()
    if mode == "loop-handler":

        def user_handler() -> None:
            record(event="user-handler")
            stop.set()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, user_handler)

    manager = LocalEventManager(
        persist_state_interval=HOUR, system_info_interval=HOUR, handle_signals=mode != "no-signals"
    )
    async with manager:
        manager.on(event=Event.MIGRATING, listener=on_migrating)
        manager.on(event=Event.ABORTING, listener=on_aborting)
        manager.on(event=Event.PERSIST_STATE, listener=on_persist_state)
        if mode == "hang":
            manager.on(event=Event.MIGRATING, listener=hang)
            manager.on(event=Event.ABORTING, listener=hang)
        print("ready", flush=True)  # noqa: T201 - the parent waits for this line
        await stop.wait()


if __name__ == "__main__":
    main()
