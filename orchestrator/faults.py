"""Fault rules: the model and the store shared by who installs them (the harness, tests)
and who obeys them (participants built with the kit, ``participants.kit.faults``).

Rules live in the ``fault_rules`` collection of the deployment's database, the one
source of truth; a reload notice on ``<namespace>.control`` tells listening participants
to read them again, and each answers with a :class:`FaultAck`. Nothing here injects a
fault: that is the participant kit's, and only with ``SAGA_FAULTS_ENABLED=true``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pymongo.errors import PyMongoError

from contracts import Message, registered_types
from orchestrator.errors import StoreUnavailable

if TYPE_CHECKING:
    from pymongo.asynchronous.database import AsyncDatabase

__all__ = [
    "ACK_TYPE",
    "NOTICE_TYPE",
    "FaultAck",
    "FaultAction",
    "FaultNotice",
    "FaultRule",
    "MongoFaultRules",
]

Doc = dict[str, Any]

FaultAction = Literal["decline", "raise", "delay", "drop", "duplicate", "crash"]
NOTICE_TYPE = "faults.reload.v1"
ACK_TYPE = "faults.reloaded.v1"


class FaultRule(BaseModel):
    """One fault rule: which commands it hits and what happens to them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex[:12],
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Unique id; the stored document's _id",
    )
    participant: str = Field(description="Service name (inventory, payment, shipping) or '*'")
    action: FaultAction
    command: str | None = Field(
        default=None,
        description="Command type as 'payment.authorize_payment.v1', 'payment.authorize_payment' "
        "or 'authorize_payment'; None hits every command of the participant",
    )
    saga_id: str | None = Field(default=None, description="Only this saga's commands")
    count: int | None = Field(
        default=None, ge=1, description="Fire this many times in all (every instance), then stop"
    )
    delay_seconds: float = Field(default=0.0, ge=0, le=3600, description="For delay")
    copies: int = Field(default=2, ge=2, le=100, description="For duplicate: sends of the reply")
    reason: str = Field(default="injected fault", max_length=500, description="decline / raise")
    exit_code: int = Field(default=70, ge=1, le=255, description="For crash")
    expires_at: datetime | None = Field(default=None, description="Ignored after this time")

    @model_validator(mode="after")
    def _consistent(self) -> FaultRule:
        if self.action == "delay" and self.delay_seconds <= 0:
            raise ValueError("a delay rule needs delay_seconds > 0")
        known = set().union(*(_command_names(t) for t in registered_types()))
        if self.command is not None and self.command not in known:
            raise ValueError(f"no message type is called {self.command!r}")
        return self

    def matches(
        self,
        service: str,
        command: Message,
        saga_id: str,
        *,
        now: datetime,
        refusable: bool = True,
    ) -> bool:
        """Whether this rule hits ``command`` of ``saga_id`` arriving at ``service``;
        ``refusable`` says whether the command has a business refusal to decline with."""
        if self.participant not in ("*", service):
            return False
        if self.command is not None and self.command not in _command_names(command.TYPE):
            return False
        if self.saga_id is not None and self.saga_id != saga_id:
            return False
        if self.expires_at is not None and self.expires_at <= now:
            return False
        # A refusal exists only for steps that can be refused; elsewhere decline is a no-op.
        return self.action != "decline" or refusable


def _command_names(type_name: str) -> set[str]:
    """``payment.authorize_payment.v1`` -> the three spellings a rule may use."""
    unversioned = type_name.rsplit(".", 1)[0]
    return {type_name, unversioned, unversioned.split(".", 1)[-1]}


class FaultNotice(BaseModel):
    """Control message: reload the fault rules of ``namespace`` from the store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str
    request_id: str


class FaultAck(BaseModel):
    """Answer to a notice: this instance now obeys these rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    service: str
    instance: str
    rules: tuple[str, ...]


class MongoFaultRules:
    """``fault_rules``: per rule the rule's fields, ``_id`` (its id), ``active``, ``fired``
    (firings so far) and ``remaining`` (left of its count; None without a count)."""

    def __init__(self, *, database: AsyncDatabase[Doc]) -> None:
        self.collection = database["fault_rules"]

    async def add(self, rules: Iterable[FaultRule]) -> None:
        """Store rules as active."""
        docs = [
            {
                "_id": r.rule_id,
                **r.model_dump(mode="python"),
                "active": True,
                "fired": 0,
                "remaining": r.count,
                "seq": time.time_ns() + i,  # rules are tried in the order they were added
            }
            for i, r in enumerate(rules)
        ]
        if docs:
            await _store(self.collection.insert_many(docs))

    async def deactivate(self, rule_ids: Iterable[str] | None = None) -> int:
        """Deactivate some rules, or all; their counters stay. Returns how many."""
        query: Doc = {"active": True}
        if rule_ids is not None:
            query["_id"] = {"$in": list(rule_ids)}
        result = await _store(self.collection.update_many(query, {"$set": {"active": False}}))
        return int(result.modified_count)

    async def active(self, service: str | None = None) -> list[FaultRule]:
        """Active rules with firings left (for ``service`` if given), oldest first."""
        docs = await _store(self.collection.find({"active": True}).to_list(None))
        docs.sort(key=lambda d: (d.get("seq", 0), d["_id"]))
        rules = [_rule(d) for d in docs if d.get("remaining") is None or d["remaining"] > 0]
        return [r for r in rules if service is None or r.participant in ("*", service)]

    async def claim(self, rule: FaultRule) -> bool:
        """Count one firing; False if the rule is gone, inactive or used up."""
        query: Doc = {"_id": rule.rule_id, "active": True}
        change: Doc = {"$inc": {"fired": 1}}
        if rule.count is not None:
            query["remaining"] = {"$gt": 0}
            change["$inc"]["remaining"] = -1
        result = await _store(self.collection.update_one(query, change))
        return bool(result.modified_count == 1)

    async def fired(self) -> list[tuple[FaultRule, int]]:
        """Every rule ever stored (active or not) with its firings."""
        docs = await _store(self.collection.find({}).to_list(None))
        return [(_rule(d), int(d.get("fired", 0))) for d in docs]


def _rule(doc: Doc) -> FaultRule:
    fields = {k: v for k, v in doc.items() if k in FaultRule.model_fields}
    return FaultRule.model_validate(fields)


async def _store(op: Any) -> Any:
    try:
        return await op
    except PyMongoError as e:
        raise StoreUnavailable(f"fault rules: {e}") from e
