"""An owner of a RecoverableState with a history that can freeze itself in the middle of keeping a save.

Usage: history_owner_child.py SPEC_JSON TTL_MS HISTORY FREEZE FREEZE_AT

SPEC_JSON names the storage client as for owner_child.py. The state keeps `HISTORY` saves. It saves in a loop,
as owner_child.py does, printing `OWNER <done> <writer>`, `SAVING <n>`, `SAVED <n>`, `LOST <message>` (exit 4).

FREEZE says where the process stops itself with SIGSTOP, from its save number FREEZE_AT on (counted in this
process, from 1), once:

- `before_copy`: right after the record was written, before the copy to the history is asked for, printing
  `FROZEN <key of the copy>`.
- `copy`: in the copy of the save to the history, right before the copy is written (the record it copies was
  read and its version checked), printing `FROZEN <key of the copy>`. A storage client that copies without
  writing the copy through `set_record` never gets there: the process prints `NOFREEZE` after three more saves.
- `after_copy`: right after the copy to the history returned, before the trim that follows it, printing
  `FROZEN <key of the copy>`.
- `trim`: right before the first copy that fell out of the history is deleted, printing `FROZEN <its key>`.
- `none`: never.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import timedelta
from typing import Any

from owner_child import KEY, STORE, Progress, build_client, say

from recoverable import EventManager, KeyValueStore, RecoverableState, StateOwnershipError
from recoverable._history import history_prefix

INFIX = history_prefix("A")[1:]


class Freezer:
    """Stops the process (SIGSTOP) once, at the point FREEZE names, from save FREEZE_AT of this process on."""

    def __init__(self, store: Any, freeze: str, freeze_at: int) -> None:
        self.freeze = freeze
        self.freeze_at = freeze_at
        self.round = 0
        self.frozen = False
        self._set, self._delete, self._copy = store.set_record, store.delete_record, store.copy_record
        store.set_record, store.delete_record, store.copy_record = self.set_record, self.delete_record, self.copy_record

    def _stop_if(self, point: str, key: str) -> None:
        if self.freeze == point and not self.frozen and self.round >= self.freeze_at:
            self.frozen = True
            say(f"FROZEN {key}")
            os.kill(os.getpid(), signal.SIGSTOP)

    async def set_record(self, **kwargs: Any) -> str:
        if INFIX in kwargs["key"]:
            self._stop_if("copy", kwargs["key"])
        return await self._set(**kwargs)

    async def delete_record(self, **kwargs: Any) -> bool:
        if INFIX in kwargs["key"]:
            self._stop_if("trim", kwargs["key"])
        return await self._delete(**kwargs)

    async def copy_record(self, **kwargs: Any) -> str | None:
        self._stop_if("before_copy", kwargs["to_key"])
        copied = await self._copy(**kwargs)
        self._stop_if("after_copy", kwargs["to_key"])
        return copied


async def main(spec: dict[str, Any], ttl_ms: int, history: int, freeze: str, freeze_at: int) -> int:
    async with build_client(spec) as client:
        kvs = await KeyValueStore.open(name=STORE, storage_client=client)
        freezer = Freezer(kvs.client, freeze, freeze_at)
        state = RecoverableState(
            default_state=Progress(),
            persist_state_key=KEY,
            key_value_store=kvs,
            event_manager=EventManager(persist_state_interval=timedelta(hours=1)),
            lease_ttl=timedelta(milliseconds=ttl_ms),
            history=history,
        )
        try:
            loaded = await state.initialize()
        except StateOwnershipError as exc:
            say("REFUSED " + json.dumps({"owner": exc.owner, "message": str(exc)}))
            return 3
        say(f"OWNER {loaded.done} {loaded.writer}")
        loaded.writer = os.getpid()
        while True:
            freezer.round += 1
            state.current_value.done += 1
            say(f"SAVING {state.current_value.done}")
            try:
                await state.persist_state()
            except StateOwnershipError as exc:
                say(f"LOST {exc}")
                return 4
            except Exception as exc:
                say(f"LOST {type(exc).__name__}: {exc}")  # a stale owner's failure on the store: it did not land
                os._exit(4)
            say(f"SAVED {state.current_value.done}")
            if freeze != "none" and not freezer.frozen and freezer.round >= freeze_at + 3:
                say("NOFREEZE")
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    spec_arg, ttl_arg, history_arg, freeze_arg, at_arg = sys.argv[1:6]
    sys.exit(asyncio.run(main(json.loads(spec_arg), int(ttl_arg), int(history_arg), freeze_arg, int(at_arg))))
