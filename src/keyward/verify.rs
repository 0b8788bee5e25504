//! Verification: [`Keyward::verify`] from the cache without awaiting
//! when it can, and from the store (or a host's limiter) when it must.
//! What a proven key may do is decided by [`admit`], for both paths.

use chrono::DateTime;

use crate::admission::{admit, refused, Gate, Idle, Request, Verdict};

use crate::cache::{CachedKey, Held, Load, Lookup, Ticket};
use crate::clock::micros_to_time;
use crate::error::{StoreError, VerifyError};
use crate::store::{Credit, RefillDue};
use crate::telemetry::CacheResult;
use crate::tenant;
use crate::token::{DisplayPrefix, KeyHash, KeyId, MalformedToken, ParsedToken};

#[cfg(any(feature = "axum", feature = "actix", feature = "tonic"))]
use super::future::Pending;
use super::future::{Fast, VerifyFuture};
use super::request::VerifyRequest;
use super::verified::Verified;
use super::{earliest, Keyward};

impl Keyward {
    /// Checks a presented token: shape and checksum (no store access if
    /// wrong), then the stored hash in constant time, then status,
    /// inactivity, the key's rate limit, the tenant's quota and the key's
    /// remaining uses, in that order.
    ///
    /// # Errors
    /// [`VerifyError::Malformed`], [`VerifyError::Invalid`] (unknown key
    /// or wrong secret, indistinguishable), then, only for the right
    /// secret, [`VerifyError::Revoked`], [`VerifyError::Expired`],
    /// [`VerifyError::Inactive`], [`VerifyError::RateLimited`],
    /// [`VerifyError::QuotaExceeded`], [`VerifyError::UsageExceeded`];
    /// [`VerifyError::Store`] when the store cannot be asked.
    pub fn verify<'a>(&'a self, token: &'a str) -> VerifyFuture<'a> {
        VerifyFuture::new(self, token, VerifyRequest::new())
    }

    /// [`Keyward::verify`], and the key must belong to `tenant` (e.g. from
    /// an `X-Tenant-Name` header) or, with nested tenants, to an ancestor
    /// of it. Checked before limits and uses are counted. When a key of
    /// an ancestor acts for a descendant, the descendant's quota applies
    /// as well as the key's own tenant's.
    ///
    /// # Errors
    /// As [`Keyward::verify`]; [`VerifyError::InvalidTenant`] (before the
    /// key is looked at) when `tenant` is not a canonical tenant path, and
    /// [`VerifyError::WrongTenant`].
    pub fn verify_for_tenant<'a>(&'a self, token: &'a str, tenant: &'a str) -> VerifyFuture<'a> {
        VerifyFuture::new(self, token, VerifyRequest::new().tenant(tenant))
    }

    /// [`Keyward::verify`] for a request described by `req`: the tenant
    /// it names (as [`Keyward::verify_for_tenant`]), the client address
    /// (checked against the key's [`IpAllowlist`](crate::IpAllowlist)
    /// after the secret is proven) and its cost (uses of a usage-limited
    /// key, and the key's named limits). Allocation-free for a cached key,
    /// like [`Keyward::verify`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use keyward::{Actor, Catalog, IpAllowlist, Keyward, MemoryStore, NewKey, VerifyError, VerifyRequest};
    ///
    /// let catalog = Catalog::builder().resource("contacts", ["read"]).build()?;
    /// let keys = Keyward::builder(MemoryStore::new(), catalog.clone()).build()?;
    /// let admin = Actor::new("u1", "acme").permissions(catalog.all()).may_manage_keys(true);
    /// let office: IpAllowlist = "203.0.113.0/24".parse()?;
    /// let issued = keys.create(&admin, NewKey::new("Office").allowed_ips(office)).await?;
    /// let token = issued.token.expose_secret();
    ///
    /// let inside = VerifyRequest::new().client_ip("203.0.113.9".parse()?);
    /// assert!(keys.verify_with(token, inside).await.is_ok());
    /// let outside = VerifyRequest::new().client_ip("198.51.100.1".parse()?);
    /// assert!(matches!(keys.verify_with(token, outside).await, Err(VerifyError::IpNotAllowed)));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Keyward::verify_for_tenant`]; [`VerifyError::NotYetValid`],
    /// [`VerifyError::IpNotAllowed`] and [`VerifyError::LimitExceeded`].
    pub fn verify_with<'a>(&'a self, token: &'a str, req: VerifyRequest<'a>) -> VerifyFuture<'a> {
        VerifyFuture::new(self, token, req)
    }

    #[cfg(any(feature = "axum", feature = "actix", feature = "tonic"))]
    /// [`Keyward::verify_with`] as far as it goes without awaiting: the
    /// answer for a cached key whose every check can be decided here, or
    /// what [`VerifyFuture::resume`] needs to finish. For a caller that
    /// would otherwise have to own its future (an HTTP gate): it borrows,
    /// allocates and clones nothing on the way to an answer.
    pub(crate) fn verify_now(
        &self,
        token: &str,
        req: &VerifyRequest<'_>,
    ) -> Result<Result<Verified, VerifyError>, Pending> {
        match self.verify_cached(token, req) {
            Fast::Done(result) => Ok(result),
            Fast::Slow(resume) => Err(Pending::at(resume, req)),
        }
    }

    /// Where a verification of `token` for `req` that
    /// [`Keyward::verify_now`] left pending goes on: from the step it
    /// stopped at if both are the ones it was given (a caller that read
    /// them again got the same: the same id and hash, the same request);
    /// from the start otherwise, never on an entry this token did not
    /// prove or past checks made for another request. Costs a hash, on a
    /// path that awaits the store or a limiter.
    #[cfg(any(feature = "axum", feature = "actix", feature = "tonic"))]
    pub(super) fn resumable(
        &self,
        token: &str,
        req: &VerifyRequest<'_>,
        pending: Pending,
    ) -> Option<(Held, Gate)> {
        let (entry, gate) = pending.resume_for(req)?;
        let parsed = self.split(token).ok()?;
        if parsed.id() != entry.id {
            return None;
        }
        // Hashed (and so scrubbed) whenever it is padded.
        let mut block = [0u8; 64];
        if !parsed.pad_into(&mut block) {
            return None;
        }
        let proven = entry.hash.proven_by(&mut block);
        proven.then_some((entry, gate))
    }

    /// Verification from the cache alone, without awaiting anything: a
    /// known key whose every check can be decided here. Anything else
    /// goes on in [`Keyward::verify_slow`], from the step where it
    /// stopped, so nothing is counted twice. Always inlined, for the
    /// same reason as [`Keyward::admitted`]: what it answers is read
    /// straight from where it was made.
    #[inline(always)]
    pub(super) fn verify_cached(&self, token: &str, req: &VerifyRequest<'_>) -> Fast {
        if let Some(Err(e)) = req.tenant.map(tenant::validate) {
            return Fast::Done(Err(self.refuse(None, VerifyError::InvalidTenant(e))));
        }
        // Two copies of the rest, one per way of reading the token: had
        // both led into one, the parts would be stored to memory at the
        // join and read back in wider loads than the stores that wrote
        // them, a stall on every verify.
        if self.inner.legacy.is_empty() {
            self.verify_parsed(self.inner.format.split(token), req)
        } else {
            self.verify_parsed(self.parse(token), req)
        }
    }

    /// [`Keyward::verify_cached`] once the token is read.
    #[inline(always)]
    fn verify_parsed(
        &self,
        parsed: Result<ParsedToken<'_>, MalformedToken>,
        req: &VerifyRequest<'_>,
    ) -> Fast {
        let inner = &*self.inner;
        // The shape first: made-up strings stop here, before the clock,
        // the cache or SHA-256. The checksum is asked only when the id is
        // not cached (before anything costlier than a lookup) or the hash
        // does not match: an accepted key's stored hash proves the whole
        // token, so an accept never pays for the CRC. (A token of a legacy
        // format has no checksum: its id is derived from its hash, so it
        // costs a hash here, and a store read the first time its id is
        // asked for.)
        let Ok(parsed) = parsed else {
            return Fast::Done(Err(self.refuse(None, VerifyError::Malformed)));
        };
        let id = parsed.id();
        // The host's clock first: from the padding to the scrub, only
        // plain loads and the hash run.
        let now_us = self.now_us();
        let mut block = [0u8; 64];
        if !parsed.pad_into(&mut block) {
            return Fast::Slow(None);
        }
        // The id is public (lists, logs, errors name it), so the token is
        // hashed only when its id is in the cache: an unknown id costs no
        // hash, and a flood of made-up tokens is the cheapest kind to
        // refuse. The id is found by the table's ids alone, the hash runs
        // while that slot's memory is on its way (at a million keys, a
        // cache miss), and the entry is taken after it.
        //
        // This function's copy of the secret is scrubbed on both paths
        // before anything but plain loads and the hash runs (taking the
        // entry may free another, through the allocator).
        let Some(at) = inner.cache.locate(&id) else {
            KeyHash::scrub(&mut block);
            return self.not_cached(&parsed, now_us);
        };
        let hash = KeyHash::of_padded(&block);
        KeyHash::scrub(&mut block);
        let Some((entry, stale)) = inner.cache.hit_at(at, &id, now_us) else {
            return self.not_cached(&parsed, now_us);
        };
        inner.telemetry.lookup(CacheResult::Hit);
        if !entry.hash.matches(&hash) {
            // A typo is told from a wrong secret here, as before a store
            // read: the answer does not depend on what is cached.
            if !parsed.checksum_ok() {
                return Fast::Done(Err(self.refuse(None, VerifyError::Malformed)));
            }
            // Same id, same prefix: the entry's copy is a fixed-size move.
            return Fast::Done(Err(
                self.refuse(Some((id, entry.prefix)), VerifyError::Invalid)
            ));
        }
        let req = self.request(req, now_us, self.idleness(&entry, now_us, false));
        let verdict = admit(&entry, &req, &inner.limits, Gate::FIRST);
        // After the verdict: what it counted on the entry's limiter is in
        // the state the background read copies to the new entry.
        if stale {
            self.revalidate(&entry, now_us);
        }
        match verdict {
            Verdict::Admit => Fast::Done(Ok(self.admitted(entry, now_us, None))),
            Verdict::Refuse(err) => Fast::Done(Err(self.refuse_proven(&entry, err))),
            Verdict::Await(gate) => Fast::Slow(Some((entry, gate))),
        }
    }

    /// [`Keyward::verify_cached`] of a token whose id the cache does not
    /// hold (or holds past every time limit): refused here if its checksum
    /// is wrong or its id is known not to exist, read from the store
    /// otherwise. Inlined: a `Fast` returned through memory here made the
    /// accept path's answer go through memory too.
    #[inline(always)]
    fn not_cached(&self, parsed: &ParsedToken<'_>, now_us: i64) -> Fast {
        let inner = &*self.inner;
        if !parsed.checksum_ok() {
            return Fast::Done(Err(self.refuse(None, VerifyError::Malformed)));
        }
        let id = parsed.id();
        if inner.cache.known_unknown(&id, now_us) {
            inner.telemetry.lookup(CacheResult::UnknownId);
            let key = Some((id, parsed.display_prefix()));
            return Fast::Done(Err(self.refuse(key, VerifyError::Invalid)));
        }
        inner.telemetry.lookup(CacheResult::Miss);
        Fast::Slow(None)
    }

    /// `token` read as a keyward token (shape and checksum) or, failing
    /// that, as one of the legacy formats of imported keys.
    pub(crate) fn parse<'t>(&self, token: &'t str) -> Result<ParsedToken<'t>, MalformedToken> {
        match self.inner.format.parse(token) {
            Err(e) if !self.inner.legacy.is_empty() => {
                crate::legacy::parse(&self.inner.legacy, token).ok_or(e)
            }
            parsed => parsed,
        }
    }

    /// `token` read for the cached path: the shape of a keyward token,
    /// its checksum left to [`ParsedToken::checksum_ok`] (with legacy
    /// formats, [`Keyward::parse`], which tells the formats apart by it).
    #[cfg(any(feature = "axum", feature = "actix", feature = "tonic"))]
    fn split<'t>(&self, token: &'t str) -> Result<ParsedToken<'t>, MalformedToken> {
        if self.inner.legacy.is_empty() {
            self.inner.format.split(token)
        } else {
            self.parse(token)
        }
    }

    /// What [`admit`] needs of this request.
    fn request<'t>(&self, req: &VerifyRequest<'t>, now_us: i64, idle: Idle) -> Request<'t> {
        Request {
            tenant: req.tenant,
            now_us,
            idle,
            nested: self.inner.nested,
            client_ip: req.client_ip,
            costs: req.costs(),
        }
    }

    /// A verified key; its use noted for the last-used write. Always
    /// inlined: a `Verified` returned through memory is read back in
    /// wider loads than the stores that wrote it, a stall.
    #[inline(always)]
    fn admitted(&self, entry: Held, now_us: i64, remaining: Option<u64>) -> Verified {
        self.inner.telemetry.verified();
        if self.inner.last_used.note(&entry, now_us) {
            self.schedule_flush(now_us);
        }
        Verified::new(entry, remaining)
    }

    /// Everything [`Keyward::verify`] does that needs to await: reading
    /// the store, a host's limiter, a usage credit. Starts from the token
    /// or, after [`Keyward::verify_cached`] stopped at a step, from that
    /// step with the entry it had; [`VerifyFuture`] bounds it by the store
    /// timeout.
    pub(super) async fn verify_slow(
        &self,
        token: &str,
        req: VerifyRequest<'_>,
        resume: Option<(Held, Gate)>,
    ) -> Result<Verified, VerifyError> {
        let now_us = self.now_us();
        let (mut entry, mut fresh, mut from) = match resume {
            Some((entry, gate)) => (entry, false, gate),
            None => {
                let (entry, fresh) = self.look_up(token, now_us).await?;
                (entry, fresh, Gate::FIRST)
            }
        };
        loop {
            let request = self.request(&req, now_us, self.idleness(&entry, now_us, fresh));
            let err = match admit(&entry, &request, &self.inner.limits, from) {
                Verdict::Admit => return Ok(self.admitted(entry, now_us, None)),
                Verdict::Refuse(err) => err,
                Verdict::Await(Gate::Inactivity) => {
                    entry = self.reload(&entry, now_us).await?;
                    (fresh, from) = (true, Gate::FIRST);
                    continue;
                }
                Verdict::Await(Gate::Limits(step)) => {
                    let who = entry.subject(req.tenant, now_us, req.costs());
                    match self.inner.limits.count(&who, step).await {
                        Ok(()) => {
                            from = Gate::Credit;
                            continue;
                        }
                        Err(r) => refused(r),
                    }
                }
                Verdict::Await(_) => match self.take_credit(&entry, now_us, req.cost).await {
                    Ok(remaining) => return Ok(self.admitted(entry, now_us, remaining)),
                    Err(err) => err,
                },
            };
            return Err(self.refuse_proven(&entry, err));
        }
    }

    /// The key a token names, if its secret matches, and whether it was
    /// just read from the store.
    async fn look_up(&self, token: &str, now_us: i64) -> Result<(Held, bool), VerifyError> {
        let Ok(parsed) = self.parse(token) else {
            return Err(self.refuse(None, VerifyError::Malformed));
        };
        let id = parsed.id();
        let key = Some((id, parsed.display_prefix()));
        let hash = parsed.hash();
        let (entry, fresh) = match self.inner.cache.get(&id, now_us) {
            Lookup::Hit(entry) => (Some(entry), false),
            Lookup::Unknown => (None, false),
            Lookup::Miss(ticket) => {
                self.may_read(&id, parsed.display_prefix(), now_us)?;
                match self.load(ticket, &id, now_us).await {
                    Ok(entry) => (entry, true),
                    Err(e) => return Err(self.refuse(key, VerifyError::Store(e))),
                }
            }
        };
        match entry {
            Some(e) if e.hash.ct_eq(&hash) => Ok((e, fresh)),
            _ => Err(self.refuse(key, VerifyError::Invalid)),
        }
    }

    /// A refusal before the secret was proven: audited without a tenant.
    /// Always inlined: the error it hands back, returned through memory,
    /// was read back in wider loads than the stores that wrote it, which
    /// made a wrong secret cost more than an accept.
    #[inline(always)]
    pub(super) fn refuse(
        &self,
        key: Option<(KeyId, DisplayPrefix)>,
        err: VerifyError,
    ) -> VerifyError {
        self.inner.telemetry.refused(&err);
        self.audit_verify(key, &err, None);
        err
    }

    /// A refusal of a key whose secret was proven: audited with its tenant.
    fn refuse_proven(&self, entry: &CachedKey, err: VerifyError) -> VerifyError {
        self.inner.telemetry.refused(&err);
        crate::telemetry::limiter_refusal(&err);
        self.limit_exceeded(entry, &err, self.now_us());
        self.audit_verify(
            Some((entry.id, entry.prefix)),
            &err,
            Some(&entry.tenant.name),
        );
        err
    }

    /// The key read again from the store, for a copy that looks inactive:
    /// a use on another instance may not be in it yet. (Not an
    /// invalidation: the store did not change, so other loads may still
    /// cache.)
    async fn reload(&self, entry: &CachedKey, now_us: i64) -> Result<Held, VerifyError> {
        let cache = &self.inner.cache;
        cache.forget(&entry.id);
        let reloaded = match cache.get(&entry.id, now_us) {
            Lookup::Hit(e) => Ok(Some(e)),
            Lookup::Unknown => Ok(None),
            Lookup::Miss(ticket) => self.load(ticket, &entry.id, now_us).await,
        };
        let key = Some((entry.id, entry.prefix));
        match reloaded {
            Ok(Some(e)) if e.hash.ct_eq(&entry.hash) => Ok(e),
            Ok(_) => Err(self.refuse(key, VerifyError::Invalid)),
            Err(e) => Err(self.refuse_proven(entry, VerifyError::Store(e))),
        }
    }

    /// Whether the key went unused for the inactivity period; `fresh`:
    /// the entry was just read from the store.
    fn idleness(&self, entry: &CachedKey, now_us: i64, fresh: bool) -> Idle {
        if !self.inactive_at(entry, now_us) {
            Idle::No
        } else if fresh || !self.may_be_newer(entry) {
            Idle::Yes
        } else {
            Idle::Unsure
        }
    }

    /// One use of a usage-limited key; the uses left after it.
    async fn take_credit(
        &self,
        entry: &CachedKey,
        now_us: i64,
        cost: u32,
    ) -> Result<Option<u64>, VerifyError> {
        match self.consume_credit(entry, now_us, cost).await {
            Ok(Credit::Consumed { remaining }) => Ok(Some(remaining)),
            Ok(Credit::Unlimited) => Ok(None),
            Ok(Credit::Exhausted) => Err(VerifyError::UsageExceeded),
            // The successor whose uses a rolled-away key draws on is
            // gone: so are the uses.
            Ok(_) if entry.rolled_to().is_some() => Err(VerifyError::UsageExceeded),
            Ok(_) => {
                // Deleted since it was cached.
                self.inner.cache.invalidate(&entry.id);
                Err(VerifyError::Invalid)
            }
            Err(e) => Err(VerifyError::Store(e)),
        }
    }

    async fn consume_credit(
        &self,
        entry: &CachedKey,
        now_us: i64,
        cost: u32,
    ) -> Result<Credit, StoreError> {
        let now = micros_to_time(now_us);
        let refill = entry.refill().map(|r| RefillDue {
            amount: r.amount,
            if_refilled_before: now
                .checked_sub_signed(r.every())
                .unwrap_or_else(earliest)
                .max(earliest()),
            now,
        });
        // A rolled-away key draws on its successor, never refilling it:
        // refills come with the successor's own uses.
        let refill = refill.filter(|_| entry.rolled_to().is_none());
        let from = entry.rolled_to().unwrap_or(entry.id);
        self.inner
            .store
            .consume_credit(&from, u64::from(cost), refill)
            .await
    }
    pub(super) fn timed_out(&self) -> StoreError {
        StoreError::Unavailable {
            message: format!(
                "the key store did not answer within {} ms",
                self.inner.store_timeout.as_millis()
            ),
            source: None,
        }
    }
    pub(super) async fn load(
        &self,
        ticket: Ticket,
        id: &KeyId,
        now_us: i64,
    ) -> Result<Option<Held>, StoreError> {
        let cache = &self.inner.cache;
        match cache.begin_load(id) {
            Load::Leader(_guard) => {
                // The guard lives until the read is cached (or fails, or
                // this future is dropped), then releases the followers.
                self.read_through(ticket, id, now_us).await
            }
            Load::Follower(wait) => {
                wait.await;
                match cache.get(id, now_us) {
                    Lookup::Hit(entry) => Ok(Some(entry)),
                    Lookup::Unknown => Ok(None),
                    // The leader failed, was cancelled, or raced an
                    // invalidation: read it ourselves, without waiting again.
                    Lookup::Miss(ticket) => self.read_through(ticket, id, now_us).await,
                }
            }
        }
    }
    async fn read_through(
        &self,
        ticket: Ticket,
        id: &KeyId,
        now_us: i64,
    ) -> Result<Option<Held>, StoreError> {
        let record = self.inner.store.get(id).await?.filter(|r| {
            // Written before tenants were canonical: no request can name
            // its tenant, and no manager could revoke it. Refused as
            // unknown until an operator moves it to a canonical tenant.
            let canonical = tenant::is_valid(&r.tenant);
            if !canonical {
                tracing::warn!(target: "keyward", key = %r.prefix, "key refused: its stored tenant is not a canonical tenant path");
            }
            canonical
        });
        // Roles are read again after a reset (a role changed): before
        // the entry is cached, so that it holds the role as it is now.
        let roles = match &record {
            Some(r) if !r.roles.is_empty() => self.inner.roles.fresh(&*self.inner.store).await?,
            _ => self.inner.roles.current(),
        };
        let key = record.map(|r| {
            let tenant = self.inner.limits.tenant(&r.tenant);
            let mut permissions = self.permissions_with(&r, &roles);
            if let Some(ceiling) = self.inner.policies.ceiling(&r.tenant) {
                permissions = permissions.intersection(&ceiling);
            }
            CachedKey::new(&r, permissions, tenant, self.inner.key_limit)
        });
        Ok(self.inner.cache.put(ticket, id, key, now_us))
    }
    fn inactive_at(&self, entry: &CachedKey, now_us: i64) -> bool {
        let Some(after) = self.inner.inactive_after_us else {
            return false;
        };
        if now_us.saturating_sub(entry.last_active_us()) < after {
            return false;
        }
        let pending = self.inner.last_used.pending(&entry.id);
        pending.is_none_or(|p| now_us.saturating_sub(p.timestamp_micros()) >= after)
    }
    fn may_be_newer(&self, entry: &CachedKey) -> bool {
        let Some(after) = self.inner.lifecycle.inactivity.after else {
            return false;
        };
        let settled = DateTime::from_timestamp_micros(entry.last_active_us())
            .and_then(|t| t.checked_add_signed(after))
            .and_then(|t| t.checked_add_signed(self.inner.last_used.interval));
        settled.is_none_or(|t| entry.loaded_at_us() < t.timestamp_micros())
    }
}
