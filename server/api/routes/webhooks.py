"""Webhook subscriptions for hospital systems (admin): create, list, deactivate, the delivery log, retry.

Creating a subscription and retrying a delivery send events out, so they need ``read_events`` too
(``ExportByWebhook``); the others are ``manage_webhooks`` alone. Delivery ids are BIGINT (``BigIdPath``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from server.api.deps import SessionDep, SettingsDep
from server.api.params import BigCursorQuery, BigIdPath, IdPath
from server.api.security import ExportByWebhook, ManageWebhooks
from server.db.webhook_tables import DeliveryStatus
from server.schemas import (
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveriesPublic,
    WebhookDeliveryPublic,
    WebhookPublic,
    WebhooksPublic,
    redact_url_secrets,
)
from server.services.webhook_subscriptions import (
    create_subscription,
    deactivate_subscription,
    list_deliveries,
    list_subscriptions,
    retry_delivery,
)
from server.services.webhook_targets import UnsafeTarget

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


@router.post("", status_code=201, response_model=WebhookCreated)
def post_webhook(session: SessionDep, settings: SettingsDep, access: ExportByWebhook,
                 body: WebhookCreate) -> WebhookCreated:
    """Subscribe a URL to event types. The answer holds the signing secret, the only time it is ever shown.
    Needs ``read_events`` as well (a token: the ``admin`` and ``read:events`` scopes): the URL gets the events.

    422 for a URL that is not http(s), holds credentials, or (in production, unless
    WARDWATCH_WEBHOOK_ALLOW_LOCAL_TARGETS) points at a loopback or link-local address."""
    try:
        row, secret = create_subscription(
            session=session, box=settings.secret_box(), url=body.url, events=body.events,
            description=body.description, created_by_user_id=access.principal.user_id,
            allow_local=settings.webhook_allow_local_targets or not settings.production)
    except UnsafeTarget as exc:
        raise HTTPException(422, detail=f"webhook URL: {exc}") from exc
    access.note(object_id=row.id, detail=f"events={' '.join(row.events)} url={redact_url_secrets(row.url)}")
    return WebhookCreated(**WebhookPublic.model_validate(row).model_dump(), secret=secret)


@router.get("", response_model=WebhooksPublic)
def read_webhooks(session: SessionDep, _access: ManageWebhooks) -> WebhooksPublic:
    """Every subscription, active or not, never its secret."""
    rows = list_subscriptions(session=session)
    return WebhooksPublic(data=[WebhookPublic.model_validate(r) for r in rows], count=len(rows))


@router.delete("/{webhook_id}", response_model=WebhookPublic)
def delete_webhook(session: SessionDep, _access: ManageWebhooks, webhook_id: IdPath) -> WebhookPublic:
    """Deactivate (kept: the delivery log refers to it); its pending deliveries are failed. Idempotent."""
    return WebhookPublic.model_validate(deactivate_subscription(session=session, subscription_id=webhook_id))


@router.get("/{webhook_id}/deliveries", response_model=WebhookDeliveriesPublic)
def read_deliveries(session: SessionDep, _access: ManageWebhooks, webhook_id: IdPath,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50, cursor: BigCursorQuery = None,
                    status: DeliveryStatus | None = None) -> WebhookDeliveriesPublic:
    """The delivery log, newest first: each delivery's state and every attempt's status code or error."""
    page, total, next_cursor = list_deliveries(session=session, subscription_id=webhook_id, limit=limit,
                                               cursor=cursor, status=status)
    return WebhookDeliveriesPublic(data=[WebhookDeliveryPublic.model_validate(d) for d in page], count=total,
                                   next_cursor=next_cursor)


@router.post("/{webhook_id}/deliveries/{delivery_id}/retry", status_code=202, response_model=WebhookDeliveryPublic,
             responses={409: {"description": "the delivery has not failed (pending or delivered)"}})
def post_retry(session: SessionDep, access: ExportByWebhook, webhook_id: IdPath,
               delivery_id: BigIdPath) -> WebhookDeliveryPublic:
    """Send a failed delivery's event again, as a new delivery (new id, fresh attempts); 409 unless failed.
    Needs ``read_events`` as well, as subscribing does."""
    retried = retry_delivery(session=session, subscription_id=webhook_id, delivery_id=delivery_id)
    access.note(detail=f"delivery={delivery_id} retry={retried.id}")
    return WebhookDeliveryPublic.model_validate(retried)
