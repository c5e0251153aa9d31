"""Request and response bodies of the API (validation lives here, in ``Field``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    """Request bodies: unknown fields and NUL characters in text fields are refused."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_nul(self) -> Self:
        for name, value in self:
            if isinstance(value, str) and "\x00" in value and name != "content":
                raise ValueError(f"{name} must not contain NUL characters")
        return self


class PrincipalCreate(_Strict):
    id: str = Field(min_length=1, max_length=100, description="Login name, e.g. alice")
    kind: Literal["user", "service", "runner"] = "user"
    display_name: str | None = Field(default=None, max_length=200)


class TokenCreate(_Strict):
    name: str = Field(default="default", min_length=1, max_length=200)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class TokenIssued(BaseModel):
    id: str
    principal_id: str
    token: str = Field(description="The secret; shown once, store it now")
    expires_at: datetime | None


class RoleGrant(_Strict):
    role: Literal["admin", "engineer", "approver", "compliance_reviewer", "runner", "data_owner"]
    project: str = Field(default="*", min_length=1, max_length=100)


class LineageEdge(_Strict):
    relation: Literal[
        "trained_on", "follows_rubric", "initialized_from", "evaluated_on", "derived_from"
    ]
    ref: str | None = Field(default=None, description="KIND/NAME@VERSION", max_length=300)
    kind: str | None = Field(default=None, max_length=30)
    name: str | None = Field(default=None, max_length=200)
    version: int | None = Field(default=None, ge=1)


class VersionCreate(_Strict):
    digest: str | None = Field(
        default=None, description="sha256:<hex>; computed by the server when content is sent"
    )
    uri: str | None = Field(default=None, max_length=4096)
    metadata: dict[str, Any] = Field(default_factory=dict)
    lineage: list[LineageEdge] = Field(default_factory=list, max_length=1000)
    content: str | None = Field(
        default=None,
        description="Dataset JSONL or rubric document; the server validates it, computes "
        "statistics and the digest (required for datasets and rubrics)",
    )
    content_encoding: Literal["utf-8", "base64"] = "utf-8"
    filename: str | None = Field(default=None, max_length=300)


class Checkpoint(BaseModel):
    origin: str
    tree_size: int
    root_hash: str = Field(description="lowercase hex")
    key_id: str = Field(description="hex note key id of the signer")
    note: str = Field(description="C2SP signed-note text")
    created_at: datetime


class InclusionProof(BaseModel):
    leaf_index: int
    tree_size: int
    leaf_hash: str
    root_hash: str
    hashes: list[str] = Field(description="RFC 6962 audit path, leaf to root, lowercase hex")


class ConsistencyProof(BaseModel):
    first: int
    second: int
    first_root: str
    second_root: str
    hashes: list[str]


class KeyRegister(_Strict):
    public_key: str = Field(description="base64 raw Ed25519 public key (32 bytes)", max_length=100)
    name: str = Field(default="default", min_length=1, max_length=200)


class KeyRevoke(_Strict):
    reason: str = Field(min_length=1, max_length=2000)


class RequestCreate(_Strict):
    kind: str = Field(max_length=30)
    name: str = Field(max_length=200)
    version: int = Field(ge=1, le=2**31 - 1)
    target_stage: str = Field(max_length=30)
    justification: str = Field(min_length=1, max_length=10_000)
    traffic_share: float | None = Field(default=None, gt=0, le=1)


class Signoff(_Strict):
    envelope: dict[str, Any] = Field(
        description="DSSE envelope over the canonical sign-off statement (see GET request)"
    )


class Reason(_Strict):
    reason: str = Field(min_length=1, max_length=2000)


class ContractRegister(_Strict):
    envelope: dict[str, Any] = Field(
        description="DSSE envelope (payloadType application/vnd.in-toto+json) over the "
        "canonical in-toto statement of the contract, signed by the data owner"
    )


class AnnotatorErase(_Strict):
    annotator: str | None = Field(
        default=None, min_length=1, max_length=1000, description="The person's annotator id"
    )
    pseudonym: str | None = Field(default=None, min_length=1, max_length=80)


class AnnotatorResolve(_Strict):
    pseudonym: str = Field(min_length=1, max_length=80)


class JobCreate(_Strict):
    trainer: Literal["reward_model", "dpo", "evaluation"]
    datasets: list[str] = Field(min_length=1, max_length=50, description="dataset versions")
    rubric: str | None = Field(default=None, max_length=300)
    base_model: str | None = Field(default=None, max_length=300)
    reward_model: str | None = Field(default=None, max_length=300)
    policy: str | None = Field(default=None, max_length=300)
    reference: str | None = Field(default=None, max_length=300)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    output_name: str | None = Field(
        default=None, max_length=200, description="name of the output artifact"
    )


class JobClaim(_Strict):
    # a registered id is at most 100 characters; a longer one would only be echoed into the
    # contract.rejected entry and the error
    contract: dict[str, Any] | Annotated[str, Field(max_length=200)] | None = Field(
        default=None,
        description="the data contract presented: its DSSE envelope, or a registered id",
    )
    lease_seconds: int | None = Field(default=None, ge=5, le=86_400)
    trainers: list[Literal["reward_model", "dpo", "evaluation"]] | None = Field(
        default=None, description="claim-next only: trainers this runner runs"
    )


class JobHeartbeat(_Strict):
    claim: int = Field(ge=0, description="seq of the job.claimed entry (the claim's id)")
    progress: dict[str, Any] = Field(default_factory=dict)


class JobRelease(_Strict):
    claim: int = Field(ge=0)
    reason: str | None = Field(default=None, max_length=2000)


class JobFail(_Strict):
    claim: int = Field(ge=0)
    reason: str = Field(min_length=1, max_length=2000)


class JobFinish(_Strict):
    claim: int = Field(ge=0)
    digest: str = Field(max_length=71, description="sha256:<hex> of the output")
    uri: str = Field(min_length=1, max_length=4096)
    metrics: dict[str, float] = Field(default_factory=dict)
    mlflow_run_id: str | None = Field(default=None, max_length=200)
    parameters: dict[str, Any] = Field(default_factory=dict)


class JobCancel(_Strict):
    reason: str | None = Field(default=None, max_length=2000)
