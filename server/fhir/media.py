"""An event's review clip and explanation overlays as FHIR ``Media``, pointing at the API's authenticated media
URLs (a receiver fetches them with the credentials it exported with; nothing is embedded in the bundle)."""

from __future__ import annotations

from datetime import datetime, timedelta

from fhir.resources.R4B.attachment import Attachment
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.media import Media
from fhir.resources.R4B.reference import Reference

from server.db.tables import Event, Explanation
from server.fhir.systems import MEDIA_TYPE, FhirSystems

METHOD_NAMES = {"grad_cam": "Grad-CAM", "guided_backprop": "Guided Backprop", "guided_grad_cam": "Guided Grad-CAM",
                "integrated_gradients": "Integrated Gradients"}
_KIND = {"image/png": ("image", "Image"), "video/mp4": ("video", "Video")}


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def _media(*, resource_id: str, content_type: str, url: str, title: str, subject: Reference | None,
           device: Reference | None = None, modality: CodeableConcept | None = None,
           created: datetime | None = None) -> Media:
    code, display = _KIND[content_type]
    return Media(id=resource_id, status="completed",
                 type=CodeableConcept(coding=[Coding(system=MEDIA_TYPE, code=code, display=display)]),
                 modality=modality, subject=subject, createdDateTime=created, device=device,
                 content=Attachment(contentType=content_type, url=url, title=title))


def clip_media(event: Event, *, api_base: str, subject: Reference | None) -> Media | None:
    """The review clip (the event with a few seconds before and after), if one was cut."""
    if not event.clip_path:
        return None
    return _media(resource_id=f"event-{event.id}-clip", content_type="video/mp4",
                  url=f"{api_base}/events/{event.id}/clip.mp4", title=f"review clip of event {event.id}",
                  subject=subject)


def explanation_media(item: Explanation, *, api_base: str, systems: FhirSystems, subject: Reference | None,
                      device: Reference, started_at: datetime | None) -> list[Media]:
    """The overlay PNG of the key frame, and the per-frame overlay MP4 where there is one. The method goes in
    ``modality`` (how the image was made) and in the title; ``device`` is the model it explains."""
    name = method_name(item.method)
    modality = CodeableConcept(coding=[Coding(system=systems.code_system("explanation-method"), code=item.method,
                                              display=name)], text=name)
    created = started_at + timedelta(seconds=item.key_frame_time) if started_at is not None else None
    url = f"{api_base}/explanations/{item.id}"
    out = [_media(resource_id=f"explanation-{item.id}-overlay-png", content_type="image/png",
                  url=f"{url}/overlay.png", title=f"{name} overlay of the key frame", subject=subject,
                  device=device, modality=modality, created=created)]
    if item.video_path:
        out.append(_media(resource_id=f"explanation-{item.id}-overlay-mp4", content_type="video/mp4",
                          url=f"{url}/overlay.mp4", title=f"{name} overlay, per frame", subject=subject,
                          device=device, modality=modality))
    return out
