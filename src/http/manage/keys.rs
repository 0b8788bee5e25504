//! The key routes: create, list, get, change, revoke, reactivate, roll,
//! delete.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Json;
use chrono::Duration;
use http::StatusCode;

use super::schema::{
    CreateKey, Created, KeyList, KeyView, LimitView, ListParams, RollKey, UpdateKey,
};
use super::{invalid_cursor, Ctx, KeyPath, Reader, Writer};
use crate::access::IpAllowlist;
use crate::http::ApiError;
use crate::http::{JsonBody as Body, Query};
use crate::key::NewKey;
use crate::keyward::{KeyCursor, KeyQuery, KeyUpdate};
use crate::limit::NamedLimit;
use crate::limit::RateLimit;

/// Creates a key and returns its token, once.
#[utoipa::path(
    post, path = "/", tag = "keys", operation_id = "create_key",
    request_body = CreateKey,
    responses(
        (status = 201, description = "Created. The token is in this response only.", body = Created),
        (status = 413, description = "The body is over 2 MB.", body = super::schema::ErrorBody),
        (status = 415, description = "The body is not JSON.", body = super::schema::ErrorBody),
        (status = 422, description = "A field is unknown, missing or invalid: `field` names it.", body = super::schema::ErrorBody),
    )
)]
pub(super) async fn create(
    State(ctx): State<Ctx>,
    Writer(actor): Writer,
    Body(body): Body<CreateKey>,
) -> Result<impl IntoResponse, ApiError> {
    let mut new = NewKey::new(body.name).permissions(body.permissions);
    if let Some(tenant) = body.tenant {
        new = new.tenant(tenant);
    }
    match (body.expires_at, body.expires_in_seconds) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "expires_in_seconds",
                "invalid_expiry",
                "Give expires_at or expires_in_seconds, not both.",
            ))
        }
        (Some(at), None) => new = new.expires_at(at),
        (None, Some(secs)) => {
            let ttl = Duration::try_seconds(secs)
                .filter(|d| *d > Duration::zero())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "expires_in_seconds",
                        "invalid_expiry",
                        "expires_in_seconds must be a positive number of seconds, ending no later than 9999-12-31.",
                    )
                })?;
            new = new.expires_in(ttl);
        }
        (None, None) => {}
    }
    if let Some(m) = body.metadata {
        new = new.metadata(m);
    }
    if let Some(n) = body.rate_limit_per_minute {
        new = new.rate_limit(per_minute(n)?);
    }
    if let Some(nets) = body.allowed_ips {
        new = new.allowed_ips(allowlist(nets)?);
    }
    if let Some(at) = body.not_before {
        new = new.not_before(at);
    }
    new = new.roles(body.roles);
    for l in named(body.limits)? {
        new = new.limit(l.name, l.limit);
    }
    let in_seconds = body.expires_in_seconds.is_some();
    let issued = ctx.keys.create(&actor, new).await.map_err(|e| {
        let mut err = ApiError::from(e);
        // The library says "expiry"; name the field the caller sent.
        if in_seconds && err.code == "invalid_expiry" {
            err.field = Some("expires_in_seconds".into());
        }
        err
    })?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            token: issued.token.expose_secret().to_string(),
            key: issued.key.into(),
        }),
    ))
}

/// An allowlist as sent; 422 naming `allowed_ips` when it cannot be read.
fn allowlist(nets: Vec<String>) -> Result<IpAllowlist, ApiError> {
    IpAllowlist::new(nets)
        .map_err(|e| ApiError::invalid("allowed_ips", "invalid_allowed_ips", e.to_string()))
}

/// Named limits as sent; 422 naming `limits` when one is invalid.
fn named(limits: Vec<LimitView>) -> Result<Vec<NamedLimit>, ApiError> {
    let bad = |msg: String| ApiError::invalid("limits", "invalid_limit", msg);
    limits
        .into_iter()
        .map(|l| {
            let per = Duration::try_milliseconds((l.per_seconds * 1000.0).round() as i64)
                .filter(|_| l.per_seconds.is_finite())
                .ok_or_else(|| bad("per_seconds is out of range.".into()))?;
            let limit = RateLimit::new(l.max, per).map_err(|e| bad(e.to_string()))?;
            NamedLimit::new(l.name, limit).map_err(|e| bad(e.to_string()))
        })
        .collect()
}

fn per_minute(n: u32) -> Result<RateLimit, ApiError> {
    RateLimit::per_minute(n).map_err(|_| {
        ApiError::invalid(
            "rate_limit_per_minute",
            "invalid_rate_limit",
            "rate_limit_per_minute must be at least 1.",
        )
    })
}

/// Lists keys, newest first, a page at a time.
#[utoipa::path(
    get, path = "/", tag = "keys", operation_id = "list_keys",
    params(ListParams),
    responses(
        (status = 200, description = "A page of keys, newest first.", body = KeyList),
        (status = 422, description = "A query parameter is unknown or invalid: `field` names it.", body = super::schema::ErrorBody),
    )
)]
pub(super) async fn list(
    State(ctx): State<Ctx>,
    Reader(actor): Reader,
    Query(params): Query<ListParams>,
) -> Result<Json<KeyList>, ApiError> {
    let mut query = KeyQuery::new().limit(params.limit.unwrap_or(20));
    if let Some(cursor) = params.cursor {
        let cursor: KeyCursor = cursor.parse().map_err(|_| invalid_cursor())?;
        query = query.after(cursor);
    }
    if let Some(status) = params.status {
        query = query.status(status.into());
    }
    if let Some(name) = params.name {
        query = query.name_contains(name);
    }
    if let Some(tenant) = params.tenant {
        query = query.tenant(tenant);
    }
    let page = ctx.keys.list_page(&actor, &query).await?;
    Ok(Json(KeyList {
        data: page.keys.into_iter().map(Into::into).collect(),
        next_cursor: page.next.map(|c| c.to_string()),
    }))
}

/// One key.
#[utoipa::path(
    get, path = "/{id}", tag = "keys", operation_id = "get_key",
    params(("id" = String, Path, description = "The key's id.")),
    responses(
        (status = 200, description = "The key.", body = KeyView),
        (status = 404, description = "No such key here.", body = super::schema::ErrorBody),
    )
)]
pub(super) async fn get(
    State(ctx): State<Ctx>,
    Reader(actor): Reader,
    KeyPath(id): KeyPath,
) -> Result<Json<KeyView>, ApiError> {
    Ok(Json(ctx.keys.get(&actor, &id).await?.into()))
}

/// Changes a key's name, permissions and rate limit: all or nothing.
#[utoipa::path(
    patch, path = "/{id}", tag = "keys", operation_id = "update_key",
    params(("id" = String, Path, description = "The key's id.")),
    request_body = UpdateKey,
    responses(
        (status = 200, description = "The changed key.", body = KeyView),
        (status = 404, description = "No such key here.", body = super::schema::ErrorBody),
        (status = 413, description = "The body is over 2 MB.", body = super::schema::ErrorBody),
        (status = 415, description = "The body is not JSON.", body = super::schema::ErrorBody),
        (status = 422, description = "A field is unknown or invalid, or the body changes nothing: nothing was changed.", body = super::schema::ErrorBody),
    )
)]
pub(super) async fn update(
    State(ctx): State<Ctx>,
    Writer(actor): Writer,
    KeyPath(id): KeyPath,
    Body(body): Body<UpdateKey>,
) -> Result<Json<KeyView>, ApiError> {
    let mut update = KeyUpdate::new();
    if let Some(name) = body.name {
        update = update.name(name);
    }
    if let Some(permissions) = body.permissions {
        update = update.permissions(permissions);
    }
    if let Some(limit) = body.rate_limit_per_minute {
        update = update.rate_limit(limit.map(per_minute).transpose()?);
    }
    if let Some(nets) = body.allowed_ips {
        update = update.allowed_ips(nets.map(allowlist).transpose()?);
    }
    if let Some(at) = body.not_before {
        update = update.not_before(at);
    }
    if let Some(roles) = body.roles {
        update = update.roles(roles);
    }
    if let Some(limits) = body.limits {
        update = update.limits(named(limits)?);
    }
    if update.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_update",
            "Give a name, permissions, a rate limit, an allowlist, not_before, roles, limits, or several.",
        ));
    }
    Ok(Json(ctx.keys.update(&actor, &id, update).await?.into()))
}

/// Revokes a key: it stops working at once, and can be reactivated.
#[utoipa::path(
    post, path = "/{id}/revoke", tag = "keys", operation_id = "revoke_key",
    params(("id" = String, Path, description = "The key's id.")),
    responses(
        (status = 200, description = "The revoked key.", body = KeyView),
        (status = 404, description = "No such key here.", body = super::schema::ErrorBody),
    )
)]
pub(super) async fn revoke(
    State(ctx): State<Ctx>,
    Writer(actor): Writer,
    KeyPath(id): KeyPath,
) -> Result<Json<KeyView>, ApiError> {
    Ok(Json(ctx.keys.revoke(&actor, &id).await?.into()))
}

/// Reactivates a revoked key.
#[utoipa::path(
    post, path = "/{id}/reactivate", tag = "keys", operation_id = "reactivate_key",
    params(("id" = String, Path, description = "The key's id.")),
    responses(
        (status = 200, description = "The active key.", body = KeyView),
        (status = 404, description = "No such key here.", body = super::schema::ErrorBody),
        (status = 409, description = "The key has expired or was rolled away: it cannot come back.", body = super::schema::ErrorBody),
    )
)]
pub(super) async fn reactivate(
    State(ctx): State<Ctx>,
    Writer(actor): Writer,
    KeyPath(id): KeyPath,
) -> Result<Json<KeyView>, ApiError> {
    Ok(Json(ctx.keys.reactivate(&actor, &id).await?.into()))
}

/// Rolls a key: a new key with the same settings, and the old one keeps
/// working for the grace period the caller states.
#[utoipa::path(
    post, path = "/{id}/roll", tag = "keys", operation_id = "roll_key",
    params(("id" = String, Path, description = "The key's id.")),
    request_body = RollKey,
    responses(
        (status = 201, description = "The new key. The token is in this response only.", body = Created),
        (status = 404, description = "No such key here.", body = super::schema::ErrorBody),
        (status = 409, description = "The key is revoked, expired or already rolled.", body = super::schema::ErrorBody),
        (status = 413, description = "The body is over 2 MB.", body = super::schema::ErrorBody),
        (status = 415, description = "The body is not JSON.", body = super::schema::ErrorBody),
        (status = 422, description = "`grace_seconds` is missing or negative.", body = super::schema::ErrorBody),
    )
)]
pub(super) async fn roll(
    State(ctx): State<Ctx>,
    Writer(actor): Writer,
    KeyPath(id): KeyPath,
    Body(body): Body<RollKey>,
) -> Result<impl IntoResponse, ApiError> {
    let grace = Duration::try_seconds(body.grace_seconds)
        .filter(|g| *g >= Duration::zero())
        .ok_or_else(|| {
            ApiError::invalid(
                "grace_seconds",
                "invalid_grace",
                "grace_seconds must be zero or a positive number of seconds.",
            )
        })?;
    let rolled = ctx.keys.roll(&actor, &id, grace).await?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            token: rolled.token.expose_secret().to_string(),
            key: rolled.key.into(),
        }),
    ))
}

/// Deletes a key for good; its audit events remain.
#[utoipa::path(
    delete, path = "/{id}", tag = "keys", operation_id = "delete_key",
    params(("id" = String, Path, description = "The key's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such key here.", body = super::schema::ErrorBody),
    )
)]
pub(super) async fn delete(
    State(ctx): State<Ctx>,
    Writer(actor): Writer,
    KeyPath(id): KeyPath,
) -> Result<StatusCode, ApiError> {
    ctx.keys.delete(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
