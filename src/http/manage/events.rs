//! The audit routes: a key's events and a tenant's, newest first.

use axum::extract::State;
use axum::Json;
use http::StatusCode;

use super::schema::{EventList, EventParams, KeyEventParams};
use super::{invalid_cursor, Ctx, KeyPath, Reader};
use crate::audit::{AuditPage, AuditQuery, AuditTrail};
use crate::http::ApiError;
use crate::http::Query;

/// The trail, or 404 when the host keeps none.
fn trail(ctx: &Ctx) -> Result<&dyn AuditTrail, ApiError> {
    ctx.trail.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_audit_trail",
            "This service keeps no audit trail.",
        )
    })
}

/// `query` from the page's cursor and size.
fn paged(
    mut query: AuditQuery,
    cursor: Option<String>,
    limit: Option<usize>,
) -> Result<AuditQuery, ApiError> {
    if let Some(cursor) = cursor {
        let before: u64 = cursor.parse().map_err(|_| invalid_cursor())?;
        query = query.before(before);
    }
    Ok(query.limit(limit.unwrap_or(50)))
}

fn list(page: AuditPage) -> Json<EventList> {
    Json(EventList {
        data: page.events.into_iter().map(Into::into).collect(),
        next_cursor: page.next.map(|n| n.to_string()),
    })
}

/// A key's audit events, newest first: what was done to it, by whom, and
/// its refused verifications.
#[utoipa::path(
    get, path = "/{id}/events", tag = "audit", operation_id = "key_events",
    params(("id" = String, Path, description = "The key's id."), KeyEventParams),
    responses(
        (status = 200, description = "A page of events, newest first.", body = EventList),
        (status = 404, description = "No such key here, or no audit trail kept.", body = super::schema::ErrorBody),
        (status = 422, description = "A query parameter is unknown or invalid.", body = super::schema::ErrorBody),
    )
)]
pub(super) async fn of_key(
    State(ctx): State<Ctx>,
    Reader(actor): Reader,
    KeyPath(id): KeyPath,
    Query(params): Query<KeyEventParams>,
) -> Result<Json<EventList>, ApiError> {
    // The key must be the actor's to see: a key of another tenant is not
    // found, as everywhere. Its events are those in its own tenant: an
    // outsider's refused attempt on its id is in the outsider's trail.
    let key = ctx.keys.get(&actor, &id).await?;
    let query = AuditQuery::new().key(id).tenant(key.tenant);
    let query = paged(query, params.cursor, params.limit)?;
    Ok(list(
        trail(&ctx)?
            .query(&query)
            .await
            .map_err(crate::error::KeyError::from)?,
    ))
}

/// A tenant's audit events, newest first, deleted keys' included.
#[utoipa::path(
    get, path = "/events", tag = "audit", operation_id = "tenant_events",
    params(EventParams),
    responses(
        (status = 200, description = "A page of events, newest first.", body = EventList),
        (status = 404, description = "No audit trail kept.", body = super::schema::ErrorBody),
        (status = 422, description = "A query parameter is unknown or invalid.", body = super::schema::ErrorBody),
    )
)]
pub(super) async fn of_tenant(
    State(ctx): State<Ctx>,
    Reader(actor): Reader,
    Query(params): Query<EventParams>,
) -> Result<Json<EventList>, ApiError> {
    let tenant = params.tenant.unwrap_or_else(|| actor.tenant().to_string());
    ctx.keys.authorize_tenant(&actor, &tenant)?;
    let query = paged(
        AuditQuery::new().tenant(tenant),
        params.cursor,
        params.limit,
    )?;
    Ok(list(
        trail(&ctx)?
            .query(&query)
            .await
            .map_err(crate::error::KeyError::from)?,
    ))
}
