//! The PostgresHost controller. `reconcile` only wraps kube's `finalizer()`, which dispatches
//! to [`apply_host`] (the pipeline below) or [`cleanup::cleanup`] (deletion).
//!
//! ```text
//! dereference ─▶ validate ─▶ observe ─▶ plan ─▶ apply ─▶ status
//! (policies)     (pure)      (cloud)    (pure)  (cloud)  (pure draft, then one write)
//! ```
//!
//! Each reconcile takes at most one step that changes the host (launch, send setup, record a
//! finished command) and writes the status once. A bad spec parks the host with a condition
//! and no requeue; cloud and API faults go to the error policy's per-object backoff.

mod apply;
pub mod archive_check;
pub mod archive_state;
mod cleanup;
pub mod context;
mod dereference;
pub mod error;
pub mod objectives;
mod observe;
pub mod plan;
pub mod recovery_check;
pub mod render;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use pgec2_api::{BackupPolicy, HOST_FINALIZER, HostPhase, PostgresHost};

pub use self::context::HostContext;
use self::error::{Error, FinalizerError};
use self::plan::Observed;
use self::status::Draft;
use crate::context::Context;
use crate::kube_layer::events;
use crate::kube_layer::status::{HostStatusPart, apply_host_status};

/// Kind label in metrics and logs.
pub const KIND: &str = "PostgresHost";

/// How often a restore that more backups or WAL may make reachable is checked again.
const RESTORE_RECHECK: Duration = Duration::from_secs(30);

/// Longest backoff of the error policy.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Runs the PostgresHost controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: Shared<BoxFuture<'static, ()>>) {
    let (hosts, policies): (Api<PostgresHost>, Api<BackupPolicy>) = match &ctx.config.namespace {
        Some(namespace) => {
            (Api::namespaced(ctx.client.clone(), namespace), Api::namespaced(ctx.client.clone(), namespace))
        }
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    let controller = Controller::new(hosts, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(policies, watcher::Config::default(), move |policy: BackupPolicy| {
            let namespace = policy.namespace();
            let name = policy.name_any();
            store
                .state()
                .into_iter()
                .filter(|host| host.namespace() == namespace && refers_to(host, &name))
                .map(|host| ObjectRef::from_obj(&*host))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, Arc::new(HostContext::new(ctx)))
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "PostgresHost reconcile did not finish");
            }
        })
        .await;
}

/// True when `host` reads BackupPolicy `policy` (archive or recovery source).
fn refers_to(host: &PostgresHost, policy: &str) -> bool {
    host.policy_name() == Some(policy) || host.recovery().is_some_and(|recovery| recovery.source.policy == policy)
}

/// Dispatches Apply and Cleanup through the finalizer helper; counts the outcome.
pub async fn reconcile(host: Arc<PostgresHost>, ctx: Arc<HostContext>) -> Result<Action, FinalizerError> {
    let started = Instant::now();
    let namespace = host.namespace().unwrap_or_default();
    let api: Api<PostgresHost> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, HOST_FINALIZER, host.clone(), |event| async {
        match event {
            Finalizer::Apply(host) => apply_host(&ctx, &api, &host).await,
            Finalizer::Cleanup(host) => cleanup::cleanup(&ctx, &api, &host).await,
        }
    })
    .await;
    let label = result.as_ref().err().map(error::label);
    ctx.metrics.reconciled(KIND, label, started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.record_success(&host.uid().unwrap_or_default());
    }
    result
}

/// Requeues a failed reconcile with exponential backoff per object.
pub fn error_policy(host: Arc<PostgresHost>, error: &FinalizerError, ctx: Arc<HostContext>) -> Action {
    if error::inner(error).is_some_and(Error::is_waiting) {
        tracing::info!(host = %host.qualified_name(), %error, "waiting");
        return Action::requeue(Duration::from_secs(5));
    }
    let failures = ctx.record_failure(&host.uid().unwrap_or_default());
    let delay =
        pgec2_core::backoff::Backoff::new(Duration::from_secs(2), MAX_BACKOFF).ceiling(failures.saturating_add(1));
    tracing::warn!(host = %host.qualified_name(), %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The pipeline of a live host: dereference → validate → observe → plan → apply → status.
///
/// It starts from the stored object, not the watch cache's copy: the cache may lag behind this
/// controller's last status write (a setup just sent), and the status is applied whole.
async fn apply_host(ctx: &HostContext, api: &Api<PostgresHost>, cached: &PostgresHost) -> Result<Action, Error> {
    let host = &match api.get_status(&cached.name_any()).await {
        Ok(stored) => stored,
        Err(kube::Error::Api(response)) if response.code == 404 => return Ok(Action::await_change()),
        Err(source) => return Err(Error::Kube { action: "re-read", host: cached.qualified_name(), source }),
    };
    let policies = dereference::policies(&ctx.client, host).await?;
    let now = Timestamp::now();
    let mut draft = Draft::new(host.status.as_ref(), host.metadata.generation, now)
        .expecting(host.recovery().is_some(), host.policy_name().is_some());
    if let Err(invalid) = validate::validate(host, &policies) {
        return hold(ctx, api, host, draft, Hold::Invalid(&invalid)).await;
    }
    if host.spec.paused {
        draft.paused();
        write_status(api, host, &draft.finish()).await?;
        return Ok(Action::await_change());
    }
    let observation = match observe::observe(ctx, host, &policies).await? {
        Ok(observation) => observation,
        Err(invalid) => return hold(ctx, api, host, draft, Hold::Invalid(&invalid)).await,
    };
    draft.instance(observation.instance.as_ref(), observation.layout.as_ref());
    if policies.archive.is_none() {
        draft.no_archive();
    }
    let wanted = observation.setup.as_ref().map(|setup| setup.digest.as_str());
    let uid = host.uid().unwrap_or_default();
    let step = plan::plan(&Observed {
        status: &draft.status,
        instance: observation.instance.as_ref(),
        wanted_digest: wanted,
        setup_failures: wanted.map_or(0, |digest| ctx.setup_failures(&uid, digest)),
        now,
    });
    tracing::debug!(host = %host.qualified_name(), ?step, "planned");
    if step == plan::Step::Launch
        && draft.status.restore.is_none()
        && let Some(source_policy) = policies.recovery_source.as_ref()
    {
        // The backup is chosen and recorded before anything is launched: the volume and the
        // host's setup both follow that record, whatever happens to this operator meanwhile.
        let checked = recovery_check::check(host, source_policy, ctx.cloud.as_ref())
            .await
            .map_err(|source| Error::RecoveryCheck { host: host.qualified_name(), source: Box::new(source) })?;
        return match checked {
            Ok(reachable) => choose_restore(ctx, api, host, draft, &reachable).await,
            Err(unreachable) => hold(ctx, api, host, draft, Hold::Unreachable(&unreachable)).await,
        };
    }
    let converged = step == plan::Step::Converged;
    let restore_starts = step == plan::Step::SendSetup && restoring(host);
    let mut action = apply::apply(ctx, host, &observation, step, &mut draft).await?;
    if restore_starts && draft.status.last_command.as_ref().is_some_and(|command| !command.status.is_finished()) {
        events::normal(&ctx.recorder, host, "RestoreStarted", restore_note(host)).await;
    }
    match (&observation.instance, policies.archive.as_ref().filter(|_| converged)) {
        (Some(instance), Some(policy)) => {
            let name = host.qualified_name();
            let checked = archive_check::CheckedHost {
                uid: &uid,
                name: &name,
                instance,
                layout: observation.layout.as_ref(),
                interval: archive_check::interval(ctx.config.archive_check_interval, &policy.spec),
            };
            let next = archive_check::check(ctx, &checked, &mut draft).await;
            action = Action::requeue(next.min(ctx.config.resync_interval));
        }
        _ => ctx.archive_checks.forget(&uid),
    }
    if let Some(policy) = policies.archive.as_ref() {
        let verified_rto = policy.last_verified_rto(&host.qualified_name());
        draft.recoverability(&policy.spec, verified_rto);
    }
    let status = draft.finish();
    ctx.metrics.host_recoverability(&host.namespace().unwrap_or_default(), &host.name_any(), &status, now);
    write_status(api, host, &status).await?;
    objective_events(ctx, host, &status).await;
    if status.phase == Some(HostPhase::Ready) && host.phase() != Some(HostPhase::Ready) {
        let message = status.message.clone().unwrap_or_default();
        events::normal(&ctx.recorder, host, "Ready", message).await;
    }
    Ok(action)
}

/// A Warning event when an objective turns missed or the archive gets a hole, a Normal one when
/// it is met or whole again.
async fn objective_events(ctx: &HostContext, host: &PostgresHost, status: &pgec2_api::PostgresHostStatus) {
    use pgec2_api::condition::{ARCHIVE_COMPLETE, RPO_MET, RTO_MET};
    let watched = [
        (RPO_MET, "RpoMissed", "RpoMet"),
        (RTO_MET, "RtoMissed", "RtoMet"),
        (ARCHIVE_COMPLETE, "ArchiveHole", "ArchiveComplete"),
    ];
    for (type_, missed, met) in watched {
        let before = host.condition(type_).map(|condition| condition.status.clone());
        let Some(after) = status.conditions.iter().find(|condition| condition.type_ == type_) else { continue };
        match (before.as_deref(), after.status.as_str()) {
            (Some("False"), "False") | (_, "Unknown") => {}
            (_, "False") => events::warning(&ctx.recorder, host, missed, after.message.clone()).await,
            (Some("False"), "True") => events::normal(&ctx.recorder, host, met, after.message.clone()).await,
            _ => {}
        }
    }
}

/// True while a restore host has not yet come up once (its data directory is being restored).
fn restoring(host: &PostgresHost) -> bool {
    host.recovery().is_some() && host.status.as_ref().is_none_or(|status| status.setup_digest.is_none())
}

/// What a restore reads: source, backup and target.
fn restore_note(host: &PostgresHost) -> String {
    let Some(recovery) = host.recovery() else { return String::new() };
    let target = match recovery.target.as_ref().and_then(|target| target.point()) {
        Some(point) => point.describe(),
        None if host.spec.standby => "the end of the archive, following it as a standby".to_string(),
        None => "the end of the archive".to_string(),
    };
    format!(
        "restore of backup {} from the archive of {} (BackupPolicy {}) to {target}",
        recovery.backup, recovery.source.host, recovery.source.policy
    )
}

/// Applies the host controller's part of `host`'s status.
pub(crate) async fn write_status(
    api: &Api<PostgresHost>,
    host: &PostgresHost,
    status: &pgec2_api::PostgresHostStatus,
) -> Result<(), Error> {
    apply_host_status(api, host, HostStatusPart::Host, status).await.map(drop).map_err(|source| Error::Kube {
        action: "write the status of",
        host: host.qualified_name(),
        source,
    })
}

/// Records the backup a restore starts from in `status.restore`; the launch follows.
async fn choose_restore(
    ctx: &HostContext,
    api: &Api<PostgresHost>,
    host: &PostgresHost,
    mut draft: Draft,
    reachable: &recovery_check::Reachable,
) -> Result<Action, Error> {
    draft.restore_chosen(&reachable.backup, reachable.snapshot_id.as_deref());
    write_status(api, host, &draft.finish()).await?;
    let kind = match &reachable.snapshot_id {
        Some(snapshot_id) => format!("snapshot backup {} (volume snapshot {snapshot_id})", reachable.backup),
        None => format!("object-store backup {}", reachable.backup),
    };
    events::normal(&ctx.recorder, host, "RestoreChosen", format!("the restore starts from {kind}")).await;
    Ok(Action::requeue(Duration::from_millis(200)))
}

/// Why a host is held back with no instance.
enum Hold<'a> {
    /// Its spec cannot be acted on: phase Failed until the spec changes.
    Invalid(&'a validate::Invalid),
    /// Its restore target is beyond the source's archive: looked at again in a while when more
    /// backups or WAL may make it reachable, Failed otherwise.
    Unreachable(&'a recovery_check::Unreachable),
}

/// Holds a host back: writes why in its status (Ready) and a Warning event the first time that
/// message shows.
async fn hold(
    ctx: &HostContext,
    api: &Api<PostgresHost>,
    host: &PostgresHost,
    mut draft: Draft,
    why: Hold<'_>,
) -> Result<Action, Error> {
    let (reason, message, then) = match why {
        Hold::Invalid(invalid) => {
            draft.invalid(invalid);
            (invalid.reason, &invalid.message, Action::await_change())
        }
        Hold::Unreachable(unreachable) => {
            draft.restore_unreachable(unreachable);
            let then = if unreachable.may_resolve { Action::requeue(RESTORE_RECHECK) } else { Action::await_change() };
            (unreachable.reason, &unreachable.message, then)
        }
    };
    let already = host.condition(pgec2_api::condition::READY).is_some_and(|ready| &ready.message == message);
    write_status(api, host, &draft.finish()).await?;
    if !already {
        events::warning(&ctx.recorder, host, reason, message.clone()).await;
    }
    Ok(then)
}
