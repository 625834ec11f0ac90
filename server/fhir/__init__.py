"""FHIR R4 export (docs/fhir.md): reviewed events as Observation + Media + Device, the audit trail as AuditEvent,
both in searchset Bundles.

Built and validated with ``fhir.resources.R4B`` (FHIR 4.3), whose Observation, Media, Bundle, Device and
AuditEvent keep the R4 (4.0.1) structure; R5 replaced Media by DocumentReference and reshaped AuditEvent, so the
package's default (R5) models would not give R4 hospital systems what they parse. These modules map rows to
resources only: no queries, no HTTP (the route passes the absolute API base for media URLs).
"""
