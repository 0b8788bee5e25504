//! The OpenAPI 3.1 document of the management API, generated from the
//! handlers' annotations and the bodies' types.

use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder, ServerBuilder};
use utoipa::{Modify, OpenApi};

use super::{about, events, keys, schema, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyward key management",
        description = "Create, list, change, revoke, reactivate, roll and delete API keys, read their audit trail, and manage the webhook endpoints their events go to. Every error is `{\"error\": {\"code\", \"message\", …}}`.",
    ),
    paths(
        keys::create, keys::list, keys::get, keys::update, keys::revoke,
        keys::reactivate, keys::roll, keys::delete,
        events::of_key, events::of_tenant, about::catalog, about::me,
        webhooks::create, webhooks::list, webhooks::delete, webhooks::replay,
        super::serve_document,
    ),
    components(schemas(schema::ErrorBody, schema::ErrorDetail)),
    modifiers(&Refusals),
    tags(
        (name = "keys", description = "API keys."),
        (name = "audit", description = "The audit trail."),
        (name = "catalog", description = "The permissions and the caller."),
        (name = "webhooks", description = "Webhook endpoints: where key events are sent, signed (Standard Webhooks)."),
    ),
)]
struct Doc;

/// The security schemes, and the refusals every authenticated route can
/// answer, added to each operation once here rather than in each
/// annotation.
struct Refusals;

/// Status and meaning of the refusals every route can answer.
const COMMON: [(&str, &str); 4] = [
    (
        "400",
        "The request is ambiguous (two keys, say) or names an invalid tenant.",
    ),
    ("401", "No valid credentials."),
    (
        "403",
        "The caller may not do this: `permission` names what it lacks.",
    ),
    (
        "503",
        "Keys cannot be read or the rate limiter is down right now; retry after `Retry-After`.",
    ),
];

impl Modify for Refusals {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        doc.security = Some(vec![
            SecurityRequirement::new("api_key", Vec::<String>::new()),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]);
        let error = || {
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "ErrorBody",
                ))))
                .build()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            if path == "/openapi.json" {
                continue;
            }
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                for (status, why) in COMMON {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(why)
                                    .content("application/json", error())
                                    .build(),
                            )
                        });
                }
                let limited =
                    "The caller's key is over its rate limit or quota; retry after `Retry-After`.";
                op.responses
                    .responses
                    .entry("429".to_string())
                    .or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(limited)
                                .content("application/json", error())
                                .build(),
                        )
                    });
            }
        }
    }
}

/// The document, with the router mounted at `base` (e.g. `/api-keys`).
pub(super) fn document(base: &str, webhooks: bool) -> utoipa::openapi::OpenApi {
    let mut doc = Doc::openapi();
    doc.servers = Some(vec![ServerBuilder::new().url(base).build()]);
    if !webhooks {
        doc.paths
            .paths
            .retain(|path, _| !path.starts_with(WEBHOOK_PATHS));
        if let Some(tags) = &mut doc.tags {
            tags.retain(|t| t.name != "webhooks");
        }
    }
    doc
}

/// Where the webhook routes are, when [`super::Management::webhooks`]
/// serves them.
const WEBHOOK_PATHS: &str = "/webhook-endpoints";
