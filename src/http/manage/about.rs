//! What the caller needs to build a settings page: the permission catalog
//! and who they are.

use axum::extract::State;
use axum::response::Response;
use axum::Json;

use super::schema::{CatalogView, MeView, PermissionView, ResourceView};
use super::{json, Ctx, Reader};
use crate::http::ApiError;
use crate::permission::Catalog;

/// The permissions keys can hold, and what each implies (`write` implies
/// `read`): rendered once, when the router is built.
#[utoipa::path(
    get, path = "/catalog", tag = "catalog", operation_id = "catalog",
    responses((status = 200, description = "The catalog.", body = CatalogView))
)]
pub(super) async fn catalog(State(ctx): State<Ctx>, Reader(_): Reader) -> Response {
    json(&ctx.catalog)
}

/// The catalog as [`catalog`] serves it.
pub(super) fn catalog_view(catalog: &Catalog) -> CatalogView {
    let resources = catalog
        .resources()
        .map(|(resource, actions)| ResourceView {
            name: resource.to_string(),
            permissions: actions
                .map(|action| {
                    let name = format!("{resource}:{action}");
                    let implies = catalog
                        .parse_set([name.as_str()])
                        .map(|set| {
                            set.names()
                                .filter(|n| *n != name)
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default();
                    PermissionView {
                        name,
                        action: action.to_string(),
                        implies,
                    }
                })
                .collect(),
        })
        .collect();
    CatalogView { resources }
}

/// Who the caller is: their tenant and what they hold.
#[utoipa::path(
    get, path = "/me", tag = "catalog", operation_id = "me",
    responses((status = 200, description = "The caller.", body = MeView))
)]
pub(super) async fn me(Reader(actor): Reader) -> Result<Json<MeView>, ApiError> {
    Ok(Json(MeView {
        actor: actor.id().to_string(),
        tenant: actor.tenant().to_string(),
        permissions: actor
            .permission_set()
            .map(|set| set.names().map(str::to_string).collect())
            .unwrap_or_default(),
    }))
}
