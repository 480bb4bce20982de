//! The BackupPolicy controller: on each `schedule` tick, a base backup on every Ready host that
//! references the policy (run through the cloud's command runner, one at a time per host); after
//! a success, retention and garbage cleanup applied by the operator itself through pgec2-core
//! (hosts may not delete anything); status read from each host's storage catalog.
//!
//! ```text
//! schedule (pure) ─▶ finish running backups ─▶ start due ones ─▶ retention ─▶ catalog ─▶ status
//! ```

pub mod archive;
pub mod backups;
pub mod drill;
pub mod host_status;
mod incremental;
pub mod snapshot_lock;
pub mod snapshots;
mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use pgec2_api::{BackupPolicy, HostPhase, PostgresHost};

use self::backups::Trigger;
use crate::context::Context;
use crate::schedule::Schedule;

/// Kind label in metrics and logs.
pub const KIND: &str = "BackupPolicy";

/// How often a policy with a running backup is looked at.
const POLL_RUNNING: Duration = Duration::from_secs(3);

/// How often the catalogs are read when nothing else asks for it (a finished backup, a host
/// joining or leaving): it keeps the recovery windows current without listing big archives on
/// every poll.
const CATALOG_REFRESH: Duration = Duration::from_secs(60);

/// Failures of a policy reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read BackupPolicy {policy}: {source}")]
    ReadPolicy { policy: String, source: kube::Error },
    #[error("failed to read PostgresHosts of BackupPolicy {policy}: {source}")]
    ListHosts { policy: String, source: kube::Error },
    #[error("failed to write the status of BackupPolicy {policy}: {source}")]
    WriteStatus { policy: String, source: kube::Error },
}

impl Error {
    /// Metric label of the error.
    pub fn label(&self) -> &'static str {
        match self {
            Error::ReadPolicy { .. } => "read_policy",
            Error::ListHosts { .. } => "list_hosts",
            Error::WriteStatus { .. } => "write_status",
        }
    }
}

/// The policy controller's context: the operator's, plus when each policy's catalogs were read.
pub struct PolicyContext {
    pub ctx: Arc<Context>,
    catalog_reads: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl PolicyContext {
    pub fn new(ctx: Arc<Context>) -> Self {
        Self { ctx, catalog_reads: std::sync::Mutex::default() }
    }

    /// True when the catalogs of `policy` (by uid) were read less than [`CATALOG_REFRESH`] ago.
    fn read_recently(&self, policy: &str) -> bool {
        let reads = self.catalog_reads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        reads.get(policy).is_some_and(|read| read.elapsed() < CATALOG_REFRESH)
    }

    fn catalogs_read(&self, policy: &str) {
        let mut reads = self.catalog_reads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        reads.insert(policy.to_string(), std::time::Instant::now());
    }
}

/// Runs the BackupPolicy controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: Shared<BoxFuture<'static, ()>>) {
    let (policies, hosts): (Api<BackupPolicy>, Api<PostgresHost>) = match &ctx.config.namespace {
        Some(namespace) => {
            (Api::namespaced(ctx.client.clone(), namespace), Api::namespaced(ctx.client.clone(), namespace))
        }
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    Controller::new(policies, watcher::Config::default())
        .watches(hosts, watcher::Config::default(), |host: PostgresHost| {
            let namespace = host.namespace().unwrap_or_default();
            let policy = host.policy_name().or_else(|| drill::policy_of(&host));
            policy.map(|policy| ObjectRef::<BackupPolicy>::new(policy).within(&namespace))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::new(PolicyContext::new(ctx)))
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "BackupPolicy reconcile did not finish");
            }
        })
        .await;
}

/// Requeues a failed reconcile after a pause.
fn error_policy(policy: Arc<BackupPolicy>, error: &Error, _ctx: Arc<PolicyContext>) -> Action {
    tracing::warn!(policy = %policy.name_any(), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(10))
}

/// One pass: finish running backups, start due ones, apply retention, refresh status.
async fn reconcile(policy: Arc<BackupPolicy>, pctx: Arc<PolicyContext>) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = reconcile_policy(&policy, &pctx).await;
    pctx.ctx.metrics.reconciled(KIND, result.as_ref().err().map(Error::label), started.elapsed().as_secs_f64());
    result
}

async fn reconcile_policy(cached: &BackupPolicy, pctx: &PolicyContext) -> Result<Action, Error> {
    let ctx = pctx.ctx.as_ref();
    let namespace = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    // The stored status, not the watch cache's copy: it may lag behind the last write, and
    // `activeBackups` and `lastScheduleTime` must be current so nothing runs twice.
    let policies: Api<BackupPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    let policy = match policies.get_status(&name).await {
        Ok(policy) => policy,
        Err(kube::Error::Api(response)) if response.code == 404 => return Ok(Action::await_change()),
        Err(source) => return Err(Error::ReadPolicy { policy: name, source }),
    };
    let now = Timestamp::now();
    let mut draft = status::Draft::new(&policy, now);
    let schedules = Schedule::parse(&policy.spec.schedule, policy.spec.time_zone.as_deref())
        .and_then(|full| Ok((full, incremental::schedule_of(&policy)?)));
    let (schedule, incremental_schedule) = match schedules {
        Ok(schedules) => schedules,
        Err(invalid) => {
            draft.invalid_schedule(&invalid.to_string());
            status::write(&ctx.client, &policy, draft.finish()).await?;
            return Ok(Action::await_change());
        }
    };
    let hosts_api: Api<PostgresHost> = Api::namespaced(ctx.client.clone(), &namespace);
    let hosts: Vec<PostgresHost> = hosts_api
        .list(&Default::default())
        .await
        .map_err(|source| Error::ListHosts { policy: name.clone(), source })?
        .items
        .into_iter()
        .filter(|host| host.policy_name() == Some(name.as_str()) && host.metadata.deletion_timestamp.is_none())
        .collect();

    backups::finish_running(ctx, &policy, &hosts, &mut draft).await;
    let due =
        if policy.spec.suspend { None } else { schedule.due_tick(draft.last_schedule(), created(&policy, now), now) };
    let due_incremental = incremental_schedule
        .as_ref()
        .filter(|_| !policy.spec.suspend)
        .and_then(|incremental| incremental.due_tick(draft.last_incremental_schedule(), created(&policy, now), now));
    let (tick, incremental) = incremental::choose(due, due_incremental);
    let mut started_any = false;
    for host in &hosts {
        let request = host.pending_backup_request().map(str::to_string);
        let trigger = Trigger { tick, incremental: incremental && request.is_none(), request };
        if trigger == Trigger::default() {
            continue;
        }
        if host.phase() != Some(HostPhase::Ready) {
            tracing::info!(host = %host.qualified_name(), "not Ready; no backup for this tick or request yet");
            continue;
        }
        started_any |= backups::start(ctx, &policy, host, trigger, &mut draft).await;
    }
    if let Some(tick) = due {
        draft.scheduled(tick);
    }
    if let Some(tick) = due_incremental {
        draft.incremental_scheduled(tick);
    }
    draft.next_schedule(if policy.spec.suspend { None } else { schedule.next_after(now) });
    // Record started backups and the handled tick before the slower catalog reads.
    let policy = if started_any || tick.is_some() {
        status::write(&ctx.client, &policy, draft.snapshot()).await?
    } else {
        policy
    };
    let policy_uid = policy.metadata.uid.clone().unwrap_or_default();
    let mut host_names: Vec<String> = hosts.iter().map(PostgresHost::qualified_name).collect();
    host_names.sort();
    let hosts_changed = draft.summarized_hosts() != host_names.iter().map(String::as_str).collect::<Vec<_>>();
    let read_catalogs = draft.any_outcome() || hosts_changed || !pctx.read_recently(&policy_uid);
    for host in hosts.iter().filter(|_| read_catalogs) {
        match archive::read(&policy, host).await {
            Ok(summary) => {
                let outcome = draft.outcome(&host.qualified_name()).cloned();
                host_status::publish(&ctx.client, host, &summary, outcome.as_ref(), now).await;
                draft.host_summary(summary);
            }
            Err(error) => {
                tracing::debug!(host = %host.qualified_name(), %error, "archive not readable yet");
                draft.host_summary(archive::empty_summary(host));
            }
        }
    }
    if read_catalogs {
        pctx.catalogs_read(&policy_uid);
    }
    let drills = drill::reconcile(ctx, &policy, &hosts, &mut draft, now).await;
    let busy = !draft.active().is_empty() || drills.busy;
    status::write(&ctx.client, &policy, draft.finish()).await?;
    let next_incremental = incremental_schedule.and_then(|incremental| incremental.next_after(now));
    let next_backup = incremental::earliest(schedule.next_after(now), next_incremental);
    let next = [next_backup, drills.next_tick].into_iter().flatten().min();
    Ok(requeue(busy, policy.spec.suspend, next, now))
}

/// The policy's creation time (ticks before it never run).
fn created(policy: &BackupPolicy, now: Timestamp) -> Timestamp {
    policy.metadata.creation_timestamp.as_ref().map_or(now, |time| time.0)
}

/// Poll quickly while a backup runs, else wake up at the next tick (at most every 5 minutes).
fn requeue(busy: bool, suspended: bool, next: Option<Timestamp>, now: Timestamp) -> Action {
    if busy {
        return Action::requeue(POLL_RUNNING);
    }
    let until_next = next
        .filter(|_| !suspended)
        .and_then(|next| Duration::try_from(next.duration_since(now)).ok())
        .unwrap_or(Duration::from_secs(300));
    Action::requeue(until_next.clamp(Duration::from_millis(500), Duration::from_secs(300)))
}
