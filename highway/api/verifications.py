"""POST /verifications, GET /verifications/{id}, GET /verifications?status="""

from __future__ import annotations

from quart import Blueprint
from quart_schema import (
    document_response,
    tag,
    validate_querystring,
    validate_request,
    validate_response,
)

from highway.api.errors import ApiError
from highway.api.models import (
    ErrorResponse,
    NewVerificationRequest,
    VerificationList,
    VerificationQuery,
    VerificationResponse,
)
from highway.services import services
from highway.store import FieldToConfirm, NewVerification

blueprint = Blueprint("verifications", __name__)


@blueprint.post("/verifications")
@tag(["verifications"])
@validate_request(NewVerificationRequest)
@validate_response(VerificationResponse, 201)
@document_response(ErrorResponse, 400)
async def create_verification(data: NewVerificationRequest) -> tuple[VerificationResponse, int]:
    """Store a verification: whom to call, what to confirm, and how the agent should speak."""
    new = NewVerification(
        customer_name=data.customer_name,
        phone=data.phone,
        purpose=data.purpose,
        fields=tuple(FieldToConfirm(f.name, f.expected) for f in data.fields),
        language=data.language,
        instructions=data.instructions,
        voice=data.voice,
    )
    verification = await services().store.create_verification(new)
    return VerificationResponse.of(verification), 201


@blueprint.get("/verifications/<int:verification_id>")
@tag(["verifications"])
@validate_response(VerificationResponse, 200)
@document_response(ErrorResponse, 404)
async def get_verification(verification_id: int) -> VerificationResponse:
    """One verification, with each field's status and the outcome."""
    verification = await services().store.get_verification(verification_id)
    if verification is None:
        raise ApiError(404, f"Verification {verification_id} not found")
    return VerificationResponse.of(verification)


@blueprint.get("/verifications")
@tag(["verifications"])
@validate_querystring(VerificationQuery)
@validate_response(VerificationList, 200)
async def list_verifications(query_args: VerificationQuery) -> VerificationList:
    """Verifications, newest first, optionally only those with one status."""
    found = await services().store.list_verifications(
        status=query_args.status, limit=query_args.limit, offset=query_args.offset
    )
    return VerificationList(verifications=[VerificationResponse.of(v) for v in found])
