"""The API's request and response bodies. These pydantic models validate requests and
generate the OpenAPI document; JSON names are camelCase, as in the seed's API."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from highway.api.validation import e164, empty_as_none, joi_error, not_bool
from highway.store import Call, CallEvent, EventKind, Outcome, Verification, VerificationStatus
from highway.store.call_status import ALL_STATUSES

PhoneNumber = Annotated[str, AfterValidator(e164)]
Number = Annotated[int, BeforeValidator(not_bool)]
CallStatus = Literal[ALL_STATUSES]  # type: ignore[valid-type]
_LANGUAGE_TAG = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"
_VOICE = r"^[a-z0-9_-]{1,32}$"


class ApiModel(BaseModel):
    """A JSON body with camelCase names."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class RequestModel(ApiModel):
    """A request body or query: unknown names are refused (as Joi does), text is trimmed."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ErrorResponse(ApiModel):
    error: str = Field(description="What went wrong, in one sentence.")
    details: list[str] | None = Field(None, description="Every validation problem found.")


# Verifications


class FieldToConfirmIn(RequestModel):
    name: str = Field(min_length=1, max_length=64, examples=["date_of_birth"])
    expected: str = Field(min_length=1, max_length=500, examples=["1990-04-01"])


def _distinct_names(fields: list[FieldToConfirmIn]) -> list[FieldToConfirmIn]:
    seen: set[str] = set()
    for field in fields:
        if field.name in seen:
            raise joi_error(f'must not name a field twice ("{field.name}")')
        seen.add(field.name)
    return fields


class NewVerificationRequest(RequestModel):
    customer_name: str = Field(min_length=1, max_length=200, examples=["Ada Lovelace"])
    phone: PhoneNumber = Field(examples=["+14155550123"])
    purpose: str = Field(min_length=1, max_length=2000, examples=["Confirm a new account"])
    fields: Annotated[
        list[FieldToConfirmIn], Field(min_length=1, max_length=20), AfterValidator(_distinct_names)
    ]
    language: str = Field(
        "en", min_length=2, max_length=35, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$"
    )
    instructions: str | None = Field(None, max_length=8000, description="Extra agent instructions.")
    voice: str | None = Field(
        None, pattern=r"^[a-z0-9_-]{1,32}$", description="Overrides HIGHWAY_VOICE."
    )


class FieldToConfirmOut(ApiModel):
    name: str
    expected: str
    status: Literal["pending", "confirmed", "mismatch"]
    heard: str | None


class VerificationResponse(ApiModel):
    id: int
    customer_name: str
    phone: str
    purpose: str
    fields: list[FieldToConfirmOut]
    language: str
    instructions: str | None
    voice: str | None
    status: VerificationStatus
    outcome: Outcome | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, verification: Verification) -> VerificationResponse:
        return cls.model_validate(asdict(verification))


class VerificationList(ApiModel):
    verifications: list[VerificationResponse]


class Page(RequestModel):
    limit: Number = Field(100, ge=1, le=1000)
    offset: Number = Field(0, ge=0)


class VerificationQuery(Page):
    status: Annotated[VerificationStatus | None, BeforeValidator(empty_as_none)] = None


# Calls


class CallCustomerRequest(RequestModel):
    to: PhoneNumber = Field(examples=["+12025551234"])
    verification: Number = Field(examples=[98765])


class CallCustomerResponse(ApiModel):
    message: str = Field(examples=["Call initiated with SID: CA1234567890abcdef1234567890abcdef"])
    call_id: int
    call_sid: str


class CallFailedResponse(ErrorResponse):
    call_id: int | None = Field(None, description="The call's record, kept with the error.")


class CallEventResponse(ApiModel):
    id: int
    at: datetime
    kind: EventKind
    data: dict[str, Any]


class CallResponse(ApiModel):
    id: int
    verification_id: int | None
    call_sid: str | None
    stream_sid: str | None
    direction: str
    from_number: str | None = Field(alias="from")
    to_number: str | None = Field(alias="to")
    status: str
    created_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    duration_seconds: int | None
    end_reason: str | None
    error: str | None
    recording_url: str | None
    answered_by: str | None
    outcome: Outcome | None = Field(description="The verification's outcome, once known.")
    events: list[CallEventResponse] | None = Field(
        None, description="The call's history in order; only on GET /calls/{id}."
    )

    @classmethod
    def of(
        cls, call: Call, outcome: Outcome | None, events: list[CallEvent] | None = None
    ) -> CallResponse:
        listed = None if events is None else [asdict(event) for event in events]
        return cls.model_validate(asdict(call) | {"outcome": outcome, "events": listed})


class CallList(ApiModel):
    calls: list[CallResponse]


class CallQuery(Page):
    verification: Annotated[Number | None, BeforeValidator(empty_as_none)] = None
    status: Annotated[CallStatus | None, BeforeValidator(empty_as_none)] = None
