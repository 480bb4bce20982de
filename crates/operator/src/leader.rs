//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several operator
//! replicas exactly one reconciles. The holder renews the lease every `renew_interval`; another
//! replica takes it over once `renewTime + leaseDurationSeconds` has passed. Every write carries
//! the resourceVersion it read, so two replicas cannot both win a race.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;

/// Failures of leader election.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("failed to {action} Lease {namespace}/{name}: {source}")]
    Api { action: &'static str, namespace: String, name: String, source: kube::Error },
    #[error("lost the leadership Lease {namespace}/{name} to {holder}")]
    Lost { namespace: String, name: String, holder: String },
}

/// Which Lease, who we are, and the timing.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews (well below `lease_duration`).
    pub renew_interval: Duration,
}

/// Acquires and keeps a Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        Self { api: Api::namespaced(client, &config.namespace), config }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) -> Result<(), LeaseError> {
        let mut announced = false;
        loop {
            match self.try_acquire().await? {
                Attempt::Held => return Ok(()),
                Attempt::HeldBy(holder) if !announced => {
                    tracing::info!(lease = %self.config.name, %holder, "another replica leads; waiting for the lease");
                    announced = true;
                }
                Attempt::HeldBy(_) => {}
            }
            tokio::time::sleep(self.config.renew_interval).await;
        }
    }

    /// Renews the lease until that fails; returns why leadership ended.
    pub async fn keep(&self) -> LeaseError {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.renew_interval).await;
            match self.try_acquire().await {
                Ok(Attempt::Held) => last_renewal = tokio::time::Instant::now(),
                Ok(Attempt::HeldBy(holder)) => return self.lost(holder),
                Err(error) if last_renewal.elapsed() >= self.config.lease_duration => return error,
                Err(error) => tracing::warn!(%error, "failed to renew the leadership lease; retrying"),
            }
        }
    }

    /// Gives the lease up (on shutdown) so another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else { return };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        if let Err(error) = self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            tracing::warn!(%error, "failed to release the leadership lease; it expires on its own");
        }
    }

    fn lost(&self, holder: String) -> LeaseError {
        LeaseError::Lost { namespace: self.config.namespace.clone(), name: self.config.name.clone(), holder }
    }

    fn api_error(&self, action: &'static str) -> impl FnOnce(kube::Error) -> LeaseError + '_ {
        move |source| LeaseError::Api {
            action,
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            source,
        }
    }

    /// One round: take or renew the lease if it is ours or free.
    async fn try_acquire(&self) -> Result<Attempt, LeaseError> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await.map_err(self.api_error("read"))? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.config.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.fresh_spec(now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::HeldBy("another replica".into())),
                Err(source) => Err(self.api_error("create")(source)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
        if !ours && !is_free(&spec, now) {
            return Ok(Attempt::HeldBy(spec.holder_identity.unwrap_or_default()));
        }
        lease.spec = Some(if ours {
            LeaseSpec { renew_time: Some(MicroTime(now)), ..spec }
        } else {
            self.fresh_spec(now, spec.lease_transitions.unwrap_or(0) + 1)
        });
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::HeldBy("another replica".into())),
            Err(source) => Err(self.api_error("renew")(source)),
        }
    }

    fn fresh_spec(&self, now: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX)),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

/// The outcome of one round.
enum Attempt {
    Held,
    HeldBy(String),
}

/// True when nobody holds the lease or its holder stopped renewing it.
fn is_free(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(holder) = spec.holder_identity.as_deref() else { return true };
    if holder.is_empty() {
        return true;
    }
    let Some(renewed) = spec.renew_time.as_ref() else { return true };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    renewed.0.checked_add(duration).map_or(true, |expiry| expiry < now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).expect("time"))),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_free_when_unheld_or_expired() {
        let now = Timestamp::from_second(1000).expect("time");
        assert!(is_free(&spec(None, 990, 15), now));
        assert!(is_free(&spec(Some(""), 990, 15), now));
        assert!(!is_free(&spec(Some("other"), 990, 15), now));
        assert!(is_free(&spec(Some("other"), 980, 15), now));
    }
}
