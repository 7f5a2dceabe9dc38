"""Request and response shapes of the prize routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from healthcomp.core.inputs import Amount


class CalculateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prize_pool: Amount | None = Field(
        None,
        description=(
            "Preview another pool: an amount in the competition's currency (at most its "
            "decimals, e.g. 2 for USD, 0 for JPY), instead of the base prize plus fees "
            "minus rake. Changes nothing."
        ),
        examples=["250.00"],
    )


class Prize(BaseModel):
    user_id: str
    user_name: str
    rank: int
    places: list[int] = Field(
        description="The first and last place the winner's tie group occupies"
    )
    amount_cents: int
    amount: str
    currency: str
    status: Literal["preview", "pending", "paid", "failed"]


class Calculation(BaseModel):
    competition_id: str
    currency: str
    pool_cents: int = Field(description="What the prizes add up to, in minor units")
    amount: str
    prize_pool_cents: int = Field(description="The organizer's base prize")
    entry_fees_cents: int = Field(description="Entry fees the active participants owe")
    rake_cents: int = Field(description="The rake on the entry fees, rounded half to even")
    pool_overridden: bool = Field(description="True when `prize_pool` was given")
    scheme: Literal["top_n", "winner_takes_all", "qualifiers_split"]
    percentages: list[str]
    participants: int
    min_participants: int
    outcome: Literal["prizes", "refunds"]
    refund_reason: Literal["cancelled", "below_min_participants", "no_eligible_winner"] | None
    refunds_cents: int = Field(description="Entry fees that would be refunded")
    prizes: list[Prize]
    event_id: int = Field(description="The board version the standings come from")
    final: bool


class LedgerLine(BaseModel):
    id: str = Field(description="`<competition>:<kind>:<user>`: the payout's idempotency key")
    kind: Literal["prize", "refund"]
    user_id: str
    user_name: str | None
    rank: int | None
    places: list[int] | None
    amount_cents: int
    amount: str
    currency: str
    reason: str = Field(description="`place 1`, `places 2-3`, or why the fee is refunded")
    status: Literal["pending", "paid", "failed", "nothing_to_pay"]
    payment_ref: str | None = Field(
        None, description="The provider's reference, or why it failed (set by the worker)"
    )
    settled_at: str | None = Field(None, description="When the worker recorded the result")


class Ledger(BaseModel):
    competition_id: str
    currency: str
    pool_cents: int = Field(description="What the prizes add up to (0 when fees are refunded)")
    amount: str
    prize_pool_cents: int
    entry_fees_cents: int
    rake_cents: int
    scheme: Literal["top_n", "winner_takes_all", "qualifiers_split"]
    percentages: list[str]
    participants: int
    outcome: Literal["prizes", "refunds"]
    refund_reason: Literal["cancelled", "below_min_participants", "no_eligible_winner"] | None
    event_id: int = Field(description="The board version the standings were frozen at")
    finalized_at: str
    lines: list[LedgerLine]
    final: bool


class HistoryItem(LedgerLine):
    competition_id: str
    finalized_at: str = Field(description="When the ledger was written (distribution or cancel)")
    outcome: Literal["prizes", "refunds"]


class History(BaseModel):
    user_id: str
    items: list[HistoryItem]
    count: int
