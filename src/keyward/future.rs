//! [`VerifyFuture`]: the future of a verification, allocation-free when
//! the key is cached.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::request::VerifyRequest;
use super::verified::Verified;
use super::Keyward;
use crate::admission::Gate;
use crate::cache::Held;
use crate::deadline::Within;
use crate::error::VerifyError;

/// The future of [`Keyward::verify`], [`Keyward::verify_for_tenant`] and
/// [`Keyward::verify_with`].
///
/// Small and allocation-free when the key is cached: its first poll runs
/// the whole check without awaiting. Only a check that needs the store (or
/// a host's rate limiter) allocates, for the boxed future that does.
#[must_use = "a verification does nothing unless awaited"]
pub struct VerifyFuture<'a> {
    keys: &'a Keyward,
    token: &'a str,
    req: VerifyRequest<'a>,
    /// The rest of a check that had to await the store, within the store
    /// timeout.
    slow: Option<Within<Boxed<'a, Result<Verified, VerifyError>>>>,
    done: bool,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl<'a> VerifyFuture<'a> {
    pub(super) fn new(keys: &'a Keyward, token: &'a str, req: VerifyRequest<'a>) -> Self {
        Self {
            keys,
            token,
            req,
            slow: None,
            done: false,
        }
    }

    #[cfg(any(feature = "axum", feature = "actix", feature = "tonic"))]
    /// The rest of a verification that [`Keyward::verify_now`] could not
    /// decide, from the step where it stopped (so nothing is counted
    /// twice); `token` and `req` must be the ones it was given.
    pub(crate) fn resume(
        keys: &'a Keyward,
        token: &'a str,
        req: VerifyRequest<'a>,
        pending: Pending,
    ) -> Self {
        Self {
            keys,
            token,
            req,
            slow: Some(slow_boxed(
                keys,
                token,
                req,
                keys.resumable(token, &req, pending),
            )),
            done: false,
        }
    }
}

impl fmt::Debug for VerifyFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyFuture")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Future for VerifyFuture<'_> {
    type Output = Result<Verified, VerifyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            // Polled after completion: never resolves again.
            return Poll::Pending;
        }
        let slow = match &mut this.slow {
            Some(slow) => slow,
            None => match this.keys.verify_cached(this.token, &this.req) {
                Fast::Done(result) => {
                    this.done = true;
                    return Poll::Ready(result);
                }
                Fast::Slow(resume) => {
                    let slow = slow_boxed(this.keys, this.token, this.req, resume);
                    this.slow.insert(slow)
                }
            },
        };
        let result = match std::task::ready!(Pin::new(slow).poll(cx)) {
            Some(result) => result,
            // A verify that needs the store never waits longer than the
            // store timeout, however many calls it makes.
            None => Err(this
                .keys
                .refuse(None, VerifyError::Store(this.keys.timed_out()))),
        };
        this.slow = None;
        this.done = true;
        Poll::Ready(result)
    }
}

#[cold]
#[inline(never)]
fn slow_boxed<'a>(
    keys: &'a Keyward,
    token: &'a str,
    req: VerifyRequest<'a>,
    resume: Option<(Held, Gate)>,
) -> Within<Boxed<'a, Result<Verified, VerifyError>>> {
    let work: Boxed<'a, _> = Box::pin(keys.verify_slow(token, req, resume));
    crate::deadline::within(keys.inner.store_timeout, work)
}

#[cfg(any(feature = "axum", feature = "actix", feature = "tonic"))]
/// A verification [`Keyward::verify_now`] could not decide without
/// awaiting: where it stopped, for [`VerifyFuture::resume`].
pub(crate) struct Pending {
    at: Option<(Held, Gate)>,
    /// A fingerprint of the request the steps before `at` were taken for.
    request: u64,
}

#[cfg(any(feature = "axum", feature = "actix", feature = "tonic"))]
impl Pending {
    pub(super) fn at(at: Option<(Held, Gate)>, req: &VerifyRequest<'_>) -> Self {
        Self {
            at,
            request: fingerprint(req),
        }
    }

    /// Where to go on from for `req`: nowhere (the start) if it is not the
    /// request the earlier steps were taken for.
    pub(super) fn resume_for(self, req: &VerifyRequest<'_>) -> Option<(Held, Gate)> {
        self.at.filter(|_| fingerprint(req) == self.request)
    }
}

#[cfg(any(feature = "axum", feature = "actix", feature = "tonic"))]
fn fingerprint(req: &VerifyRequest<'_>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    req.hash(&mut h);
    h.finish()
}

/// The outcome of the cached verification.
pub(super) enum Fast {
    Done(Result<Verified, VerifyError>),
    /// Needs the store or a host's limiter: from the start, or from a
    /// step of the decision with the entry it was made on.
    Slow(Option<(Held, Gate)>),
}

#[cfg(all(test, feature = "axum"))]
mod tests {
    use super::*;
    use crate::{Actor, Catalog, MemoryStore, NewKey};

    /// A verification resumed with another token or request than the
    /// ones that started it starts over: another key's token is verified
    /// as that key, a token with the same id and another secret is
    /// refused, the same token naming another tenant is refused, and none
    /// spends the first key's uses.
    #[tokio::test]
    async fn a_resume_with_another_token_starts_over() {
        let catalog = Catalog::builder()
            .resource("contacts", ["read"])
            .build()
            .expect("catalog");
        let keys = Keyward::builder(MemoryStore::new(), catalog)
            .build()
            .expect("config");
        let boss = Actor::new("boss", "acme")
            .permissions(keys.catalog().all())
            .may_manage_keys(true);
        let create = |name: &'static str| keys.create(&boss, NewKey::new(name).remaining(5));
        let a = create("a").await.expect("a");
        let b = create("b").await.expect("b");
        let (a_token, b_token) = (a.token.expose_secret(), b.token.expose_secret());
        let req = VerifyRequest::new();
        // Both cached; a usage-limited key's verify awaits its credit.
        for token in [a_token, b_token] {
            assert_eq!(
                keys.verify(token).await.expect("valid").remaining(),
                Some(4)
            );
        }
        let pending = || match keys.verify_now(a_token, &req) {
            Err(pending) => pending,
            Ok(_) => panic!("a usage-limited key awaits its credit"),
        };
        let other = VerifyFuture::resume(&keys, b_token, req, pending()).await;
        assert_eq!(other.expect("b is valid").id(), b.key.id);
        let forged = crate::token::same_id_other_secret(a_token);
        let refused = VerifyFuture::resume(&keys, &forged, req, pending()).await;
        assert!(matches!(refused, Err(VerifyError::Invalid)), "{refused:?}");
        // The same token for another request (another tenant named):
        // from the start, refused by the check it would have skipped.
        let elsewhere = VerifyRequest::new().tenant("globex");
        let moved = VerifyFuture::resume(&keys, a_token, elsewhere, pending()).await;
        assert!(moved.is_err(), "{moved:?}");
        let same = VerifyFuture::resume(&keys, a_token, req, pending()).await;
        assert_eq!(same.expect("a is valid").remaining(), Some(3));
    }
}
