"""The JSON of a state's lease record, checked field by field when read (a record that fails is a damaged lease)."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

__all__ = ["MAX_TOKEN", "LeaseRecord", "decode_lease"]

MAX_PID = 2**31 - 1
"""pid_t is a signed 32-bit integer."""

MAX_TOKEN = 2**53 - 1
"""The largest fencing token, exact in every JSON reader; the next one starts again at 1."""


class LeaseRecord(BaseModel):
    """The JSON of a lease record.

    Every field read from a store is checked: a record that fails is a damaged lease, never a raw error.
    """

    model_config = ConfigDict(populate_by_name=True)

    owner: str = Field(min_length=1, max_length=200)
    pid: int = Field(ge=1, le=MAX_PID)
    host: str = Field(max_length=255)
    token: int = Field(default=1, ge=1, le=MAX_TOKEN)
    acquired_at: AwareDatetime = Field(alias="acquiredAt")
    expires_at: AwareDatetime = Field(alias="expiresAt")
    process_started_at: AwareDatetime | None = Field(default=None, alias="processStartedAt")
    """When the owner's process started: a later process given the same pid is not the owner."""
    pid_namespace: int | None = Field(default=None, ge=0, alias="pidNamespace")
    """The owner's pid namespace (Linux): containers of one host name may each have their own."""

    def describe(self) -> str:
        """A human description of the owner, for messages."""
        return (
            f"process {self.pid} on host {self.host!r} (owner {self.owner}, fencing token {self.token}, "
            f"lease expires {self.expires_at.isoformat(timespec='seconds')})"
        )


def decode_lease(value: bytes) -> LeaseRecord | str:
    """The lease record held in the bytes `value`, or what is wrong with them (then the lease is damaged)."""
    try:
        return LeaseRecord.model_validate_json(value)
    except ValidationError as exc:
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors(include_url=False)[:3]
        )
