//! What a route or method needs of the verified key, and the refusal
//! when it lacks it: one rule for axum's `require`, actix-web's
//! `require` and the gRPC method map.

use std::sync::Arc;

use super::ApiError;
use crate::error::Forbidden;
use crate::keyward::Verified;
use crate::permission::{Catalog, ExprError, Permission, PermissionError, PermissionExpr};

/// A permission, or an expression over permissions, and its name for
/// refusals.
#[derive(Debug, Clone)]
pub(crate) struct Requirement {
    need: Need,
    name: Arc<str>,
    /// The catalog the permission was parsed in: a permission is a bit
    /// of its catalog, meaningless in another.
    catalog: Catalog,
}

#[derive(Debug, Clone)]
enum Need {
    One(Permission),
    Expr(PermissionExpr),
}

impl Requirement {
    /// `permission`, parsed in `catalog`.
    pub(crate) fn one(catalog: &Catalog, permission: &str) -> Result<Self, PermissionError> {
        let p = catalog.parse(permission)?;
        Ok(Self {
            need: Need::One(p),
            name: Arc::from(catalog.name(p).unwrap_or(permission)),
            catalog: catalog.clone(),
        })
    }

    /// A permission expression, compiled in `catalog`.
    #[cfg_attr(not(any(feature = "axum", feature = "actix")), allow(dead_code))]
    pub(crate) fn expr(catalog: &Catalog, expression: &str) -> Result<Self, ExprError> {
        let expr = catalog.expression(expression)?;
        Ok(Self {
            name: Arc::from(expr.to_string()),
            need: Need::Expr(expr),
            catalog: catalog.clone(),
        })
    }

    /// Whether `key` meets it.
    pub(crate) fn met_by(&self, key: &Verified) -> bool {
        match &self.need {
            Need::One(p) => key.allows(*p),
            Need::Expr(e) => key.satisfies(e),
        }
    }

    /// Passes `key`, or refuses: 403 naming what is missing and the key,
    /// or, with no verified key or a key of another catalog, the host's
    /// mistake (no authenticating layer before this one; a requirement
    /// built from another catalog than the instance's).
    pub(crate) fn check(&self, key: Option<&Verified>) -> Result<(), ApiError> {
        match key {
            Some(k) if k.permissions().catalog() != &self.catalog => {
                tracing::error!(target: "keyward", requirement = %self.name, "a permission requirement was built from another catalog than the Keyward's");
                Err(misconfigured())
            }
            Some(k) if self.met_by(k) => Ok(()),
            Some(k) => Err(
                ApiError::from_forbidden(&Forbidden::Missing(self.name.to_string()))
                    .with_key(Some(k.display_prefix())),
            ),
            None => Err(missing_layer()),
        }
    }
}

/// A handler's own check that `key` holds `permission` (a name): the
/// `Authenticated::require` of every adapter. 403 naming it and the key;
/// 500 for a permission the catalog does not have.
#[cfg_attr(not(any(feature = "axum", feature = "actix")), allow(dead_code))]
pub(crate) fn require_named(key: &Verified, permission: &str) -> Result<(), ApiError> {
    key.require(permission)
        .map_err(|e| ApiError::from_forbidden(&e).with_key(Some(key.display_prefix())))
}

/// The refusal of a route whose authenticating layer is missing: the
/// host's mistake, logged.
#[cfg_attr(not(any(feature = "axum", feature = "actix")), allow(dead_code))]
pub(crate) fn missing_layer() -> ApiError {
    tracing::error!(target: "keyward", "the keyward layer or middleware is not installed on this route");
    misconfigured()
}

fn misconfigured() -> ApiError {
    ApiError::new(
        http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "The server is misconfigured.",
    )
}
