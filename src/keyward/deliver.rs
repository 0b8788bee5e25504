//! The webhook delivery worker (feature `webhooks`): claims due
//! deliveries from the store's outbox with a lease (several instances
//! share one outbox; none sends a delivery another holds), signs and
//! sends each, and settles it: gone when the endpoint took it (2xx),
//! retried with exponential backoff and jitter otherwise, dead once it
//! has failed for longer than [`DeliverySettings::give_up_after`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::TryRng;

use super::Keyward;
use crate::error::StoreError;
use crate::store::{Delivery, Settlement, StoredEndpoint};
use crate::webhook::{sign, WebhookTransport};

/// How the delivery worker behaves. The defaults suit most hosts.
#[derive(Debug, Clone)]
#[must_use]
pub struct DeliverySettings {
    poll_every: Duration,
    batch: usize,
    per_endpoint: usize,
    lease: Duration,
    first_retry: Duration,
    longest_retry: Duration,
    give_up_after: Duration,
    keep_dead_for: Duration,
}

impl Default for DeliverySettings {
    /// Polls every second, 32 deliveries in flight (4 to one endpoint),
    /// each leased for 2 minutes;
    /// retries after 5 s, doubling up to 1 h, with jitter; dead after
    /// 24 h of failing.
    fn default() -> Self {
        Self {
            poll_every: Duration::from_secs(1),
            batch: 32,
            per_endpoint: 4,
            lease: Duration::from_secs(120),
            first_retry: Duration::from_secs(5),
            longest_retry: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
            keep_dead_for: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl DeliverySettings {
    /// How often the worker looks for due deliveries when the last round
    /// found fewer than a batch (at least 10 ms).
    pub fn poll_every(mut self, every: Duration) -> Self {
        self.poll_every = every.max(Duration::from_millis(10));
        self
    }

    /// Deliveries claimed and sent at once, in a round (1 to 1,000).
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch.clamp(1, 1000);
        self
    }

    /// Attempts in flight to one endpoint at most (1 to `batch`): a slow
    /// or failing endpoint holds back only its own deliveries.
    pub fn per_endpoint(mut self, n: usize) -> Self {
        self.per_endpoint = n.max(1);
        self
    }

    /// How long a claim holds a delivery (10 s to 1 h): an attempt that
    /// is not over 5 s before its lease ends is counted as failed, so
    /// that no other worker sends the delivery while it is in flight.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.clamp(Duration::from_secs(10), Duration::from_secs(3600));
        self
    }

    /// The first retry's delay, doubled for each further attempt up to
    /// `longest`; each delay is drawn between half and all of it.
    pub fn backoff(mut self, first: Duration, longest: Duration) -> Self {
        let day = Duration::from_secs(86_400);
        self.first_retry = first.clamp(Duration::from_millis(10), day);
        self.longest_retry = longest.clamp(self.first_retry, day);
        self
    }

    /// How long a message is retried, from its event (or its last
    /// replay), before it is set aside as dead (replay it with
    /// [`Keyward::replay_webhooks`](crate::Keyward::replay_webhooks)).
    pub fn give_up_after(mut self, after: Duration) -> Self {
        self.give_up_after = after;
        self
    }

    /// How long a dead delivery is kept for a replay before the worker
    /// purges it (checked hourly).
    pub fn keep_dead_for(mut self, keep: Duration) -> Self {
        self.keep_dead_for = keep;
        self
    }

    /// The delay before the attempt after `attempts` attempts, with
    /// jitter: between half and all of `first × 2^(attempts-1)`, at most
    /// `longest`.
    fn delay(&self, attempts: u32) -> Duration {
        let doubled = self
            .first_retry
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        let full = doubled.min(self.longest_retry);
        let mut byte = [0u8; 2];
        let fraction = match rand::rngs::SysRng.try_fill_bytes(&mut byte) {
            Ok(()) => f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX),
            Err(_) => 1.0,
        };
        full.mul_f64(0.5 + 0.5 * fraction)
    }
}

/// What a round of [`Keyward::deliver_webhooks`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryRound {
    /// Deliveries claimed (those given back untried included).
    pub claimed: usize,
    /// Taken by their endpoint.
    pub delivered: usize,
    /// Failed, to be retried.
    pub retried: usize,
    /// Failed for the last time: dead.
    pub dead: usize,
}

/// The claims of one worker (or one round): who holds the leases, and how
/// many of each endpoint's deliveries are in flight.
struct Claims {
    /// A token of this worker's own, so that no other worker (not even
    /// one of the same instance) settles what it holds.
    owner: String,
    in_flight: HashMap<String, usize>,
    endpoints: HashMap<String, Option<StoredEndpoint>>,
}

/// What a task reports when its attempt is settled: the endpoint it held
/// a place of, and how it went.
type Settled = (String, &'static str);

impl Claims {
    fn new(instance: &str) -> Self {
        let token = super::webhooks::random_id("").unwrap_or_default();
        Self {
            owner: format!("{instance}.{token}"),
            in_flight: HashMap::new(),
            endpoints: HashMap::new(),
        }
    }

    fn done(&mut self, endpoint: &str) {
        if let Some(n) = self.in_flight.get_mut(endpoint) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Keyward {
    /// Claims up to `room` due deliveries (at most
    /// [`DeliverySettings::per_endpoint`] of one endpoint) and starts an
    /// attempt of each on `tasks`; a delivery whose endpoint has that many
    /// in flight already is given back untried. How many were claimed,
    /// and how many started.
    async fn start_attempts(
        &self,
        claims: &mut Claims,
        room: usize,
        transport: &Arc<dyn WebhookTransport>,
        settings: &DeliverySettings,
        tasks: &mut tokio::task::JoinSet<Settled>,
    ) -> Result<(usize, usize), StoreError> {
        let Some(outbox) = self.inner.store.outbox() else {
            return Ok((0, 0));
        };
        if room == 0 {
            return Ok((0, 0));
        }
        let now = self.now();
        let lease_until = later(now, to_chrono(settings.lease));
        let claimed = outbox
            .claim(&claims.owner, now, lease_until, room, settings.per_endpoint)
            .await?;
        let count = claimed.len();
        let mut started = 0;
        for delivery in claimed {
            let busy = claims
                .in_flight
                .entry(delivery.endpoint_id.clone())
                .or_default();
            if *busy >= settings.per_endpoint {
                let given = outbox.settle(&delivery.id, &claims.owner, &Settlement::Release);
                if let Err(e) = given.await {
                    tracing::warn!(target: "keyward", error = %e, "could not give a webhook delivery back; it waits for its lease");
                }
                continue;
            }
            *busy += 1;
            started += 1;
            let endpoint = match claims.endpoints.get(&delivery.endpoint_id) {
                Some(e) => Ok(e.clone()),
                None => outbox.endpoint(&delivery.endpoint_id).await.inspect(|e| {
                    claims
                        .endpoints
                        .insert(delivery.endpoint_id.clone(), e.clone());
                }),
            };
            let (keys, transport) = (self.clone(), Arc::clone(transport));
            let (owner, settings) = (claims.owner.clone(), settings.clone());
            tasks.spawn(async move {
                let label = keys
                    .attempt(&*transport, endpoint, &delivery, &owner, &settings)
                    .await;
                (delivery.endpoint_id, label)
            });
        }
        Ok((count, started))
    }

    /// Sends one delivery and settles it; what became of it.
    async fn attempt(
        &self,
        transport: &dyn WebhookTransport,
        endpoint: Result<Option<StoredEndpoint>, StoreError>,
        delivery: &Delivery,
        owner: &str,
        settings: &DeliverySettings,
    ) -> &'static str {
        let at = self.now().timestamp();
        // An attempt never outlives its lease: past it, another worker
        // may send the delivery too.
        let limit = settings.lease.saturating_sub(Duration::from_secs(5));
        let outcome = match endpoint {
            // Deleted meanwhile: nothing to send it to.
            Ok(None) => Ok(()),
            Ok(Some(e)) => tokio::time::timeout(limit, send(transport, &e, delivery, at))
                .await
                .unwrap_or_else(|_| Err("the attempt outlived its lease".into())),
            Err(e) => Err(format!("the endpoint could not be read: {e}")),
        };
        let settlement = self.settlement(delivery, outcome, settings);
        let label = match &settlement {
            Settlement::Delivered => "delivered",
            Settlement::Retry { .. } => "retry",
            _ => {
                tracing::warn!(target: "keyward", delivery = %delivery.id, endpoint = %delivery.endpoint_id, event = %delivery.event_type, "a webhook delivery failed for the last time; it is dead until replayed");
                "dead"
            }
        };
        crate::telemetry::webhook_attempt(label);
        if let Some(outbox) = self.inner.store.outbox() {
            if let Err(e) = outbox.settle(&delivery.id, owner, &settlement).await {
                // Its lease runs out and it is sent again: at least once.
                tracing::warn!(target: "keyward", delivery = %delivery.id, error = %e, "could not settle a webhook delivery; it will be sent again");
            }
        }
        label
    }

    /// Runs one round of delivery: claims up to a batch of due
    /// deliveries, sends them at once through `transport` (at most
    /// [`DeliverySettings::per_endpoint`] to one endpoint; the others are
    /// given back), settles each. [`Keyward::spawn_webhook_worker`] runs
    /// delivery continuously; call this to drive it yourself (from a job
    /// scheduler, or in tests).
    ///
    /// # Errors
    /// [`StoreError`] when the outbox cannot be claimed from.
    pub async fn deliver_webhooks(
        &self,
        transport: &Arc<dyn WebhookTransport>,
        settings: &DeliverySettings,
    ) -> Result<DeliveryRound, StoreError> {
        let mut claims = Claims::new(&self.inner.instance);
        let mut tasks = tokio::task::JoinSet::new();
        let (claimed, _) = self
            .start_attempts(&mut claims, settings.batch, transport, settings, &mut tasks)
            .await?;
        let mut round = DeliveryRound {
            claimed,
            ..DeliveryRound::default()
        };
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((_, "delivered")) => round.delivered += 1,
                Ok((_, "retry")) => round.retried += 1,
                Ok(_) => round.dead += 1,
                // A panicking transport: the lease runs out and the
                // delivery is claimed again.
                Err(_) => {}
            }
        }
        Ok(round)
    }

    /// How an attempt that ended with `outcome` is settled.
    fn settlement(
        &self,
        delivery: &Delivery,
        outcome: Result<(), String>,
        settings: &DeliverySettings,
    ) -> Settlement {
        let error = match outcome {
            Ok(()) => return Settlement::Delivered,
            Err(e) => e,
        };
        let now = self.now();
        if now.signed_duration_since(delivery.retrying_since) >= to_chrono(settings.give_up_after) {
            return Settlement::Dead { at: now, error };
        }
        let delay = to_chrono(settings.delay(delivery.attempts));
        Settlement::Retry {
            at: later(now, delay),
            error,
        }
    }

    /// Runs delivery on the tokio runtime until the handle is aborted:
    /// keeps up to [`DeliverySettings::batch`] attempts in flight (at most
    /// [`DeliverySettings::per_endpoint`] to one endpoint, so that a slow
    /// endpoint holds back only its own deliveries), claiming more as
    /// they end, and looks again every [`DeliverySettings::poll_every`]
    /// when nothing is due. Run one on every instance: they share the
    /// outbox without sending a delivery twice at once.
    ///
    /// ```no_run
    /// # async fn demo(keys: keyward::Keyward) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use keyward::webhook::HttpTransport;
    /// use keyward::DeliverySettings;
    ///
    /// let worker = keys.spawn_webhook_worker(Arc::new(HttpTransport::new()?), DeliverySettings::default());
    /// // … at shutdown:
    /// worker.abort();
    /// # Ok(()) }
    /// ```
    pub fn spawn_webhook_worker(
        &self,
        transport: Arc<dyn WebhookTransport>,
        settings: DeliverySettings,
    ) -> tokio::task::JoinHandle<()> {
        let keys = self.clone();
        tokio::spawn(async move {
            let mut claims = Claims::new(&keys.inner.instance);
            let mut tasks = tokio::task::JoinSet::new();
            let mut purged_at: Option<std::time::Instant> = None;
            let mut reported_at: Option<std::time::Instant> = None;
            loop {
                if purged_at.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
                    purged_at = Some(std::time::Instant::now());
                    keys.purge_dead_deliveries(&settings).await;
                }
                let room = settings.batch.saturating_sub(tasks.len());
                let started = keys
                    .start_attempts(&mut claims, room, &transport, &settings, &mut tasks)
                    .await;
                // Full: every place was taken, so more may be due now.
                // (Deliveries given back for a busy endpoint wait for one
                // of its attempts to end.)
                let full = match started {
                    Ok((_, n)) => n > 0 && n >= room,
                    Err(e) => {
                        tracing::warn!(target: "keyward", error = %e, "could not claim webhook deliveries; will retry");
                        false
                    }
                };
                // The gauge once a look, not once an attempt: it costs a
                // count of the outbox.
                if reported_at.is_none_or(|at| at.elapsed() >= settings.poll_every) {
                    reported_at = Some(std::time::Instant::now());
                    keys.report_queue().await;
                }
                // Wait for an attempt to end or the next look, whichever
                // comes first; at once if the last claim was full.
                if !full || tasks.len() >= settings.batch {
                    tokio::select! {
                        Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                            if let Ok((endpoint, _)) = done {
                                claims.done(&endpoint);
                            }
                        }
                        () = tokio::time::sleep(settings.poll_every) => {}
                    }
                }
                while let Some(done) = tasks.try_join_next() {
                    if let Ok((endpoint, _)) = done {
                        claims.done(&endpoint);
                    }
                }
                // Endpoints are read again now and then: a changed URL or a
                // deleted endpoint is seen.
                if tasks.is_empty() {
                    claims.endpoints.clear();
                }
            }
        })
    }

    /// Deletes the deliveries dead for longer than
    /// [`DeliverySettings::keep_dead_for`].
    async fn purge_dead_deliveries(&self, settings: &DeliverySettings) {
        let Some(outbox) = self.inner.store.outbox() else {
            return;
        };
        let before = self
            .now()
            .checked_sub_signed(to_chrono(settings.keep_dead_for))
            .unwrap_or_else(super::earliest)
            .max(super::earliest());
        match outbox.purge_dead(before).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(target: "keyward", purged = n, "dead webhook deliveries purged")
            }
            Err(e) => {
                tracing::warn!(target: "keyward", error = %e, "could not purge dead webhook deliveries")
            }
        }
    }

    /// The outbox's size, as a metric (feature `metrics`).
    async fn report_queue(&self) {
        #[cfg(feature = "metrics")]
        if let Some(outbox) = self.inner.store.outbox() {
            if let Ok(c) = outbox.counts(None).await {
                crate::telemetry::webhook_queue(c.pending, c.dead);
            }
        }
    }
}

/// How often the worker purges dead deliveries.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `now + delay`, or the latest instant keyward stores.
fn later(now: DateTime<Utc>, delay: chrono::Duration) -> DateTime<Utc> {
    now.checked_add_signed(delay)
        .unwrap_or_else(super::latest)
        .min(super::latest())
}

/// Sends one delivery to its endpoint, signed at `at` (Unix seconds):
/// `Ok` for a 2xx answer, else why not.
async fn send(
    transport: &dyn WebhookTransport,
    endpoint: &StoredEndpoint,
    delivery: &Delivery,
    at: i64,
) -> Result<(), String> {
    let body = delivery.payload.as_bytes();
    let signature = sign(&endpoint.secret, &delivery.message_id, at, body);
    let headers = [
        ("content-type", "application/json".to_string()),
        ("webhook-id", delivery.message_id.clone()),
        ("webhook-timestamp", at.to_string()),
        ("webhook-signature", signature),
    ];
    match transport.post(&endpoint.url, &headers, body).await {
        Ok(status) if (200..300).contains(&status) => Ok(()),
        Ok(status) => Err(format!("the endpoint answered {status}")),
        Err(e) => Err(e.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_and_stop_growing() {
        let s =
            DeliverySettings::default().backoff(Duration::from_secs(4), Duration::from_secs(60));
        for _ in 0..50 {
            let first = s.delay(1);
            assert!(
                first >= Duration::from_secs(2) && first <= Duration::from_secs(4),
                "{first:?}"
            );
            let third = s.delay(3);
            assert!(
                third >= Duration::from_secs(8) && third <= Duration::from_secs(16),
                "{third:?}"
            );
            let late = s.delay(40);
            assert!(
                late >= Duration::from_secs(30) && late <= Duration::from_secs(60),
                "{late:?}"
            );
        }
        let draws: std::collections::HashSet<Duration> = (0..20).map(|_| s.delay(5)).collect();
        assert!(draws.len() > 1, "jitter varies the delay");
    }
}
