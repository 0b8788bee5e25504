//! A tonic gRPC service protected by keyward: `contacts.v1.Contacts`
//! with `List` (needs `contacts:read`) and `Create` (needs
//! `contacts:write`), per tenant.
//!
//! ```sh
//! cargo run --example grpc --features tonic        # 127.0.0.1:50051
//! ```
//!
//! It prints two keys, one that reads and one that writes. With grpcurl
//! (and `examples/contacts.proto`):
//!
//! ```sh
//! grpcurl -plaintext -import-path examples -proto contacts.proto \
//!   -H "x-api-key: sk_…" 127.0.0.1:50051 contacts.v1.Contacts/List
//! ```
//!
//! The messages, the server and the client in [`contacts`] are what
//! `tonic-prost-build` generates from `examples/contacts.proto`,
//! written out so that the example builds without `protoc`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use keyward::grpc::{GrpcLayer, MethodPermissions};
use keyward::{Actor, Catalog, Keyward, MemoryStore, NewKey, Verified};
use tonic::{Request, Response, Status};

use contacts::{Contact, ContactsServer, CreateRequest, ListRequest, ListResponse};

/// The wire types, server and client of `contacts.v1.Contacts`.
pub mod contacts {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use tonic::codegen::{http, Body, StdError};
    use tonic::server::{Grpc, NamedService, UnaryService};
    use tonic::{IntoRequest, Status};
    use tonic_prost::ProstCodec;

    /// A contact.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Contact {
        /// Full name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Email address.
        #[prost(string, tag = "2")]
        pub email: String,
    }

    /// `List`'s request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListRequest {}

    /// `List`'s response.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ListResponse {
        /// The tenant's contacts.
        #[prost(message, repeated, tag = "1")]
        pub contacts: Vec<Contact>,
    }

    /// `Create`'s request.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CreateRequest {
        /// The contact to add.
        #[prost(message, optional, tag = "1")]
        pub contact: Option<Contact>,
    }

    /// The service, as the host implements it.
    #[tonic::async_trait]
    pub trait Contacts: Send + Sync + 'static {
        /// The tenant's contacts.
        async fn list(
            &self,
            request: tonic::Request<ListRequest>,
        ) -> Result<tonic::Response<ListResponse>, Status>;
        /// Adds a contact.
        async fn create(
            &self,
            request: tonic::Request<CreateRequest>,
        ) -> Result<tonic::Response<Contact>, Status>;
    }

    type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

    /// The server of a [`Contacts`] implementation.
    #[derive(Debug)]
    pub struct ContactsServer<T> {
        inner: Arc<T>,
    }

    impl<T> ContactsServer<T> {
        /// Serves `inner`.
        pub fn new(inner: T) -> Self {
            Self {
                inner: Arc::new(inner),
            }
        }
    }

    impl<T> Clone for ContactsServer<T> {
        fn clone(&self) -> Self {
            Self {
                inner: self.inner.clone(),
            }
        }
    }

    struct ListSvc<T>(Arc<T>);

    impl<T: Contacts> UnaryService<ListRequest> for ListSvc<T> {
        type Response = ListResponse;
        type Future = BoxFuture<tonic::Response<ListResponse>, Status>;
        fn call(&mut self, request: tonic::Request<ListRequest>) -> Self::Future {
            let inner = self.0.clone();
            Box::pin(async move { inner.list(request).await })
        }
    }

    struct CreateSvc<T>(Arc<T>);

    impl<T: Contacts> UnaryService<CreateRequest> for CreateSvc<T> {
        type Response = Contact;
        type Future = BoxFuture<tonic::Response<Contact>, Status>;
        fn call(&mut self, request: tonic::Request<CreateRequest>) -> Self::Future {
            let inner = self.0.clone();
            Box::pin(async move { inner.create(request).await })
        }
    }

    impl<T, B> tower::Service<http::Request<B>> for ContactsServer<T>
    where
        T: Contacts,
        B: Body + Send + 'static,
        B::Error: Into<StdError> + Send + 'static,
    {
        type Response = http::Response<tonic::body::Body>;
        type Error = Infallible;
        type Future = BoxFuture<Self::Response, Infallible>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: http::Request<B>) -> Self::Future {
            let inner = self.inner.clone();
            match req.uri().path() {
                "/contacts.v1.Contacts/List" => Box::pin(async move {
                    let mut grpc = Grpc::new(ProstCodec::default());
                    Ok(grpc.unary(ListSvc(inner), req).await)
                }),
                "/contacts.v1.Contacts/Create" => Box::pin(async move {
                    let mut grpc = Grpc::new(ProstCodec::default());
                    Ok(grpc.unary(CreateSvc(inner), req).await)
                }),
                _ => {
                    Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) })
                }
            }
        }
    }

    impl<T> NamedService for ContactsServer<T> {
        const NAME: &'static str = "contacts.v1.Contacts";
    }

    /// A client of `contacts.v1.Contacts`.
    #[derive(Debug, Clone)]
    pub struct ContactsClient {
        inner: tonic::client::Grpc<tonic::transport::Channel>,
    }

    impl ContactsClient {
        /// Connects to `dst`, e.g. `http://127.0.0.1:50051`.
        ///
        /// # Errors
        /// The address is invalid or does not answer.
        pub async fn connect(dst: String) -> Result<Self, tonic::transport::Error> {
            let channel = tonic::transport::Endpoint::new(dst)?.connect().await?;
            Ok(Self {
                inner: tonic::client::Grpc::new(channel),
            })
        }

        async fn unary<Q, R>(
            &mut self,
            request: tonic::Request<Q>,
            path: &'static str,
        ) -> Result<tonic::Response<R>, Status>
        where
            Q: prost::Message + Send + Sync + 'static,
            R: prost::Message + Default + Send + Sync + 'static,
        {
            self.inner
                .ready()
                .await
                .map_err(|e| Status::unknown(format!("the service was not ready: {e}")))?;
            let path = http::uri::PathAndQuery::from_static(path);
            self.inner.unary(request, path, ProstCodec::default()).await
        }

        /// `List`.
        ///
        /// # Errors
        /// The call's status.
        pub async fn list(
            &mut self,
            request: impl IntoRequest<ListRequest>,
        ) -> Result<tonic::Response<ListResponse>, Status> {
            self.unary(request.into_request(), "/contacts.v1.Contacts/List")
                .await
        }

        /// `Create`.
        ///
        /// # Errors
        /// The call's status.
        pub async fn create(
            &mut self,
            request: impl IntoRequest<CreateRequest>,
        ) -> Result<tonic::Response<Contact>, Status> {
            self.unary(request.into_request(), "/contacts.v1.Contacts/Create")
                .await
        }
    }
}

/// The permissions of this service.
///
/// # Panics
/// Never: the catalog is fixed and valid.
pub fn catalog() -> Catalog {
    Catalog::builder()
        .resource("contacts", ["read", "write"])
        .build()
        .expect("a valid catalog")
}

/// Contacts per tenant, in memory.
#[derive(Debug, Default)]
pub struct ContactBook {
    by_tenant: Mutex<HashMap<String, Vec<Contact>>>,
}

/// The key the layer verified: the tenant comes from it, never from the
/// request.
fn caller<T>(request: &Request<T>) -> Result<&Verified, Status> {
    request
        .extensions()
        .get::<Verified>()
        .ok_or_else(|| Status::internal("GrpcLayer is not installed"))
}

#[tonic::async_trait]
impl contacts::Contacts for ContactBook {
    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let tenant = caller(&request)?.tenant().to_string();
        let book = self
            .by_tenant
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let contacts = book.get(&tenant).cloned().unwrap_or_default();
        Ok(Response::new(ListResponse { contacts }))
    }

    async fn create(&self, request: Request<CreateRequest>) -> Result<Response<Contact>, Status> {
        let tenant = caller(&request)?.tenant().to_string();
        let contact = request
            .into_inner()
            .contact
            .ok_or_else(|| Status::invalid_argument("contact is required"))?;
        if contact.name.trim().is_empty() {
            return Err(Status::invalid_argument("contact.name is required"));
        }
        let mut book = self
            .by_tenant
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        book.entry(tenant).or_default().push(contact.clone());
        Ok(Response::new(contact))
    }
}

/// Which permission each method needs.
///
/// # Errors
/// Never with [`catalog`]: its permissions exist.
pub fn methods(catalog: &Catalog) -> Result<MethodPermissions, keyward::grpc::MethodMapError> {
    MethodPermissions::new(catalog)
        .method("/contacts.v1.Contacts/List", "contacts:read")?
        .method("/contacts.v1.Contacts/Create", "contacts:write")
}

/// Serves the service, behind keyward, on `listener` until the process
/// ends.
///
/// # Errors
/// The server fails.
pub async fn serve(
    keys: Keyward,
    listener: tokio::net::TcpListener,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let layer = GrpcLayer::new(keys.clone(), methods(keys.catalog())?);
    tonic::transport::Server::builder()
        .layer(layer)
        .add_service(ContactsServer::new(ContactBook::default()))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
        .await?;
    Ok(())
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let keys = Keyward::builder(MemoryStore::new(), catalog()).build()?;
    let admin = Actor::new("setup", "acme")
        .permissions(keys.catalog().all())
        .may_manage_keys(true);
    let reader = keys
        .create(&admin, NewKey::new("reader").permissions(["contacts:read"]))
        .await?;
    let writer = keys
        .create(
            &admin,
            NewKey::new("writer").permissions(["contacts:write"]),
        )
        .await?;
    println!("reads:  {}", reader.token.expose_secret());
    println!("writes: {}", writer.token.expose_secret());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(50051);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("contacts.v1.Contacts on {}", listener.local_addr()?);
    serve(keys, listener).await
}
