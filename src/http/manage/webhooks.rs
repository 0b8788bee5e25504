//! The webhook endpoint routes: make (the secret shown once), list,
//! delete, replay the dead deliveries.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Ctx, Reader, Writer};
use crate::http::ApiError;
use crate::http::JsonBody as Body;
use crate::webhook::{EventType, NewEndpoint, WebhookEndpoint};

/// An endpoint to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateEndpoint {
    /// Where events are POSTed: an absolute `https://` URL.
    url: String,
    /// The event types it wants (`key.created`, `key.revoked`,
    /// `key.reactivated`, `key.rolled`, `key.deleted`, `key.leaked`,
    /// `key.expiry_warning`, `key.inactivity_warning`,
    /// `key.limit_exceeded`); omitted or empty for all.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    event_types: Vec<EventType>,
    /// A note (at most 200 characters).
    #[serde(default)]
    description: String,
}

/// An endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EndpointView {
    /// `ep_…`.
    id: String,
    /// The tenant whose keys' events it receives.
    tenant: String,
    /// Where events go.
    url: String,
    /// The event types it wants; empty for all.
    event_types: Vec<String>,
    /// Its note.
    description: String,
    /// Who made it.
    created_by: String,
    /// When it was made.
    created_at: DateTime<Utc>,
    /// Deliveries waiting to be sent.
    pending: u64,
    /// Deliveries given up on; replay them.
    dead: u64,
}

impl From<WebhookEndpoint> for EndpointView {
    fn from(e: WebhookEndpoint) -> Self {
        Self {
            id: e.id,
            tenant: e.tenant,
            url: e.url,
            event_types: e
                .event_types
                .iter()
                .map(|t| t.as_str().to_string())
                .collect(),
            description: e.description,
            created_by: e.created_by,
            created_at: e.created_at,
            pending: e.pending,
            dead: e.dead,
        }
    }
}

/// A new endpoint and its signing secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CreatedEndpointView {
    /// The endpoint.
    endpoint: EndpointView,
    /// Its signing secret (`whsec_…`), in this response only.
    secret: String,
}

/// The endpoints of the caller's tenant.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EndpointList {
    /// Every endpoint, by id.
    endpoints: Vec<EndpointView>,
}

/// How many dead deliveries were made pending again.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Replayed {
    /// Deliveries due again now.
    replayed: u64,
}

/// Makes a webhook endpoint for the caller's tenant; its secret is in
/// this response only.
#[utoipa::path(
    post, path = "/webhook-endpoints", tag = "webhooks", operation_id = "create_webhook_endpoint",
    request_body = CreateEndpoint,
    responses(
        (status = 201, description = "Created. The secret is in this response only.", body = CreatedEndpointView),
        (status = 409, description = "The tenant has as many endpoints as it may.", body = super::schema::ErrorBody),
        (status = 413, description = "The body is over 2 MB.", body = super::schema::ErrorBody),
        (status = 415, description = "The body is not JSON.", body = super::schema::ErrorBody),
        (status = 422, description = "A field is unknown, missing or invalid: `field` names it.", body = super::schema::ErrorBody),
        (status = 501, description = "The key store keeps no webhook outbox.", body = super::schema::ErrorBody),
    )
)]
pub(super) async fn create(
    State(ctx): State<Ctx>,
    Writer(actor): Writer,
    Body(body): Body<CreateEndpoint>,
) -> Result<impl IntoResponse, ApiError> {
    let new = NewEndpoint::new(body.url)
        .event_types(body.event_types)
        .description(body.description);
    let made = ctx.keys.create_endpoint(&actor, new).await?;
    let view = CreatedEndpointView {
        endpoint: made.endpoint.into(),
        secret: made.secret.expose_secret().to_string(),
    };
    Ok((StatusCode::CREATED, Json(view)))
}

/// The webhook endpoints of the caller's tenant, with their waiting and
/// dead deliveries.
#[utoipa::path(
    get, path = "/webhook-endpoints", tag = "webhooks", operation_id = "list_webhook_endpoints",
    responses(
        (status = 200, description = "The endpoints.", body = EndpointList),
        (status = 501, description = "The key store keeps no webhook outbox.", body = super::schema::ErrorBody),
    )
)]
pub(super) async fn list(
    State(ctx): State<Ctx>,
    Reader(actor): Reader,
) -> Result<Json<EndpointList>, ApiError> {
    let endpoints = ctx.keys.endpoints(&actor).await?;
    Ok(Json(EndpointList {
        endpoints: endpoints.into_iter().map(Into::into).collect(),
    }))
}

/// Deletes a webhook endpoint and its waiting deliveries.
#[utoipa::path(
    delete, path = "/webhook-endpoints/{endpoint_id}", tag = "webhooks", operation_id = "delete_webhook_endpoint",
    params(("endpoint_id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such endpoint in the caller's tenant.", body = super::schema::ErrorBody),
    )
)]
pub(super) async fn delete(
    State(ctx): State<Ctx>,
    Writer(actor): Writer,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    ctx.keys.delete_endpoint(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes the endpoint's dead deliveries pending again, due now.
#[utoipa::path(
    post, path = "/webhook-endpoints/{endpoint_id}/replay", tag = "webhooks", operation_id = "replay_webhooks",
    params(("endpoint_id" = String, Path, description = "The endpoint's id (`ep_…`).")),
    responses(
        (status = 200, description = "How many deliveries are due again.", body = Replayed),
        (status = 404, description = "No such endpoint in the caller's tenant.", body = super::schema::ErrorBody),
    )
)]
pub(super) async fn replay(
    State(ctx): State<Ctx>,
    Writer(actor): Writer,
    Path(id): Path<String>,
) -> Result<Json<Replayed>, ApiError> {
    let replayed = ctx.keys.replay_webhooks(&actor, Some(&id)).await?;
    Ok(Json(Replayed { replayed }))
}
