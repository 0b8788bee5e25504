//! Who acts on the management API: [`ResolveActor`] turns a request into
//! an [`Actor`], and [`ApiKeyActors`], the default, accepts admin API keys.

use std::fmt;

use async_trait::async_trait;
use http::request::Parts;

use crate::error::Forbidden;
use crate::http::authenticate::authenticate;
use crate::http::{default_sources, ApiError, ClientAddress, KeySource};
use crate::key::Actor;
use crate::keyward::{Keyward, Verified};
use crate::permission::{Permission, PermissionError};

/// What a request does: reads keys and events, or changes keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Access {
    /// Lists, reads keys and their audit events.
    Read,
    /// Creates, changes, revokes, reactivates, rolls or deletes keys.
    Write,
}

/// Turns a management request into the [`Actor`] making it, or refuses it.
/// Whatever the actor is, every change then goes through
/// [`authority`](crate::authority): a key never holds more than the actor
/// who created or last changed it.
///
/// [`ApiKeyActors`] is the default. A host with its own sign-in (sessions,
/// cookies, axum-login) implements this to turn its user into an actor.
/// A resolver that trusts a cookie must also stop cross-site requests for
/// [`Access::Write`] (check `Origin` or `Sec-Fetch-Site`, or require a
/// header a form cannot send): revoke, reactivate and delete take no
/// body, so a JSON content type does not protect them. API keys in a
/// header need no such check.
///
/// ```
/// use async_trait::async_trait;
/// use http::request::Parts;
/// use keyward::http::manage::{Access, ResolveActor};
/// use keyward::http::ApiError;
/// use keyward::{Actor, PermissionSet};
///
/// /// The user a session layer put in the request's extensions.
/// #[derive(Clone)]
/// struct User { id: String, org: String, is_admin: bool }
///
/// struct SessionActors { grants: PermissionSet }
///
/// #[async_trait]
/// impl ResolveActor for SessionActors {
///     async fn resolve(&self, parts: &mut Parts, access: Access) -> Result<Actor, ApiError> {
///         let user = parts.extensions.get::<User>().ok_or_else(ApiError::unauthorized)?;
///         if access == Access::Write && !user.is_admin {
///             return Err(ApiError::new(http::StatusCode::FORBIDDEN, "forbidden", "Only admins change API keys."));
///         }
///         Ok(Actor::new(format!("user:{}", user.id), user.org.clone())
///             .permissions(self.grants.clone())
///             .may_manage_keys(true))
///     }
/// }
/// ```
#[async_trait]
pub trait ResolveActor: Send + Sync + 'static {
    /// The actor making the request, for `access`.
    ///
    /// # Errors
    /// The refusal to send: 401 when nobody is signed in, 403 when the
    /// caller may not have this `access`.
    async fn resolve(&self, parts: &mut Parts, access: Access) -> Result<Actor, ApiError>;
}

/// The default [`ResolveActor`]: the caller is an API key verified by
/// keyward (the one a [`KeywardLayer`](crate::http::KeywardLayer) in front
/// already verified, or one read from `x-api-key` or
/// `Authorization: Bearer`), holding the read permission to read and the
/// write permission to change. It acts as itself: what it creates or
/// changes never holds more than it does.
#[derive(Clone)]
pub struct ApiKeyActors {
    keys: Keyward,
    read: Permission,
    write: Permission,
    sources: Vec<KeySource>,
    client: ClientAddress,
}

impl fmt::Debug for ApiKeyActors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |p| self.keys.catalog().name(p).unwrap_or("?").to_string();
        f.debug_struct("ApiKeyActors")
            .field("read", &name(self.read))
            .field("write", &name(self.write))
            .finish_non_exhaustive()
    }
}

impl ApiKeyActors {
    /// Keys holding `read` may read; keys holding `write` may change keys
    /// too. Both are catalog permissions, e.g. `api_keys:read` and
    /// `api_keys:write`.
    ///
    /// # Errors
    /// [`PermissionError`] if either is not in the catalog.
    pub fn new(keys: Keyward, read: &str, write: &str) -> Result<Self, PermissionError> {
        let read = keys.catalog().parse(read)?;
        let write = keys.catalog().parse(write)?;
        Ok(Self {
            keys,
            read,
            write,
            sources: default_sources(),
            client: ClientAddress::peer(),
        })
    }

    /// Where the client address of a key verified here (with no
    /// [`KeywardLayer`](crate::http::KeywardLayer) in front) comes from;
    /// see [`KeywardLayer::client_address`](crate::http::KeywardLayer::client_address).
    #[must_use]
    pub fn client_address(mut self, client: ClientAddress) -> Self {
        self.client = client;
        self
    }

    async fn verified(&self, parts: &Parts) -> Result<Verified, ApiError> {
        match parts.extensions.get::<Verified>() {
            Some(v) => Ok(v.clone()),
            None => {
                let ip = self.client.of(&parts.extensions, &parts.headers);
                authenticate(&self.keys, &self.sources, None, &parts.headers, ip).await
            }
        }
    }
}

#[async_trait]
impl ResolveActor for ApiKeyActors {
    async fn resolve(&self, parts: &mut Parts, access: Access) -> Result<Actor, ApiError> {
        let key = self.verified(parts).await?;
        let need = match access {
            Access::Read => self.read,
            Access::Write => self.write,
        };
        if !key.allows(need) {
            let name = self.keys.catalog().name(need).unwrap_or_default();
            let lacks = Forbidden::Missing(name.to_string());
            return Err(ApiError::from_forbidden(&lacks).with_key(Some(key.display_prefix())));
        }
        Ok(key.actor().may_manage_keys(true))
    }
}
