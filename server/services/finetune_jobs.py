"""Fine-tune jobs as an administrator asks for them: checked at once, queued for the training queue."""

from __future__ import annotations

from sqlalchemy.orm import Session

from model.pretrained import PretrainedWeightsError, check_pretrained
from model.training.config import TrainConfig
from server.db.tables import Job, ModelVersion
from server.schemas import FinetuneJobCreate
from server.services.errors import InvalidInputError, NotFoundError
from server.services.jobs import JobKind, create_job
from server.services.models import get_active_model


def create_finetune_job(*, session: Session, request: FinetuneJobCreate, created_by: str) -> Job:
    """A queued fine-tune job of ``request``'s base model (default: the active one), flushed.

    Everything that would make the job fail is refused now, not after it has waited in the queue: an unknown
    base model (NotFoundError), hyper-parameters the trainer would not take and pretrained weights that are
    missing or do not fit the base's architecture (InvalidInputError). The caller commits, then enqueues.
    """
    if request.base_model_id:
        base = session.get(ModelVersion, request.base_model_id)
    else:
        base = get_active_model(session=session)
    if base is None:
        raise NotFoundError("model version", request.base_model_id)
    try:
        TrainConfig.from_dict({**request.hyperparameters, "mode": request.mode})
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"bad hyperparameters: {exc}") from exc
    if request.pretrained:
        try:
            check_pretrained(request.pretrained, arch=base.architecture)
        except PretrainedWeightsError as exc:
            raise InvalidInputError(f"pretrained weights: {exc}") from exc
    params = request.model_dump() | {"base_model_id": base.id}
    return create_job(session=session, kind=JobKind.finetune, params=params, created_by=created_by)
