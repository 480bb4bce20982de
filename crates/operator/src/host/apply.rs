//! Apply: carry out the planned step through the cloud and note the result in the status draft.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::runtime::controller::Action;
use pgec2_api::{CommandPurpose, PostgresHost, VolumeType};

use super::HostContext;
use super::error::Error;
use super::observe::{Observation, host_ref};
use super::plan::Step;
use super::render::SETUP_PURPOSE;
use super::status::{CommandOutcome, Draft};
use crate::cloud::{self, CloudError, HostInstance, InstanceSettings, LaunchRequest, VolumeSettings, tags};
use crate::kube_layer::events;

/// How often a running setup command is polled.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How often a starting instance is looked at.
const INSTANCE_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// How often a command another controller started is looked at.
const FOREIGN_COMMAND_INTERVAL: Duration = Duration::from_secs(10);
/// Retry interval when the cloud has no capacity.
const CAPACITY_RETRY: Duration = Duration::from_secs(120);

/// Carries out `step` and returns when to look again.
pub async fn apply(
    ctx: &HostContext,
    host: &PostgresHost,
    observation: &Observation,
    step: Step,
    draft: &mut Draft,
) -> Result<Action, Error> {
    match (step, observation.instance.as_ref()) {
        (Step::Launch, _) => launch(ctx, host, observation, draft).await,
        (Step::PollCommand { id, purpose: CommandPurpose::Setup }, Some(instance)) => {
            poll_setup(ctx, host, observation, instance, &id, draft).await
        }
        (Step::PollCommand { .. }, _) => Ok(Action::requeue(FOREIGN_COMMAND_INTERVAL)),
        (Step::SendSetup, Some(instance)) => send_setup(ctx, host, observation, instance, draft).await,
        (Step::RetrySetup { after }, _) => Ok(Action::requeue(after)),
        (Step::Converged, _) => Ok(Action::requeue(ctx.config.resync_interval)),
        (Step::WaitForInstance | Step::SendSetup, _) => Ok(Action::requeue(INSTANCE_POLL_INTERVAL)),
    }
}

async fn launch(
    ctx: &HostContext,
    host: &PostgresHost,
    observation: &Observation,
    draft: &mut Draft,
) -> Result<Action, Error> {
    let request = launch_request(host)?;
    let instance = match ctx.cloud.launch_host(&request).await {
        Ok(instance) => instance,
        Err(CloudError::InvalidSpec(message)) => {
            draft.launch_refused("InvalidHostSettings", &message);
            events::warning(&ctx.recorder, host, "LaunchRefused", message).await;
            return Ok(Action::await_change());
        }
        Err(CloudError::Capacity(message)) => {
            draft.launch_refused("InsufficientCapacity", &message);
            return Ok(Action::requeue(CAPACITY_RETRY));
        }
        Err(source) => return Err(Error::Cloud { host: host.qualified_name(), source }),
    };
    let layout = match ctx.cloud.host_layout(&request.host, &instance).await {
        Ok(layout) => Some(layout),
        Err(error) => {
            tracing::debug!(host = %host.qualified_name(), %error, "layout not known yet");
            observation.layout.clone()
        }
    };
    draft.instance(Some(&instance), layout.as_ref());
    let volume = instance.volume_id.as_deref().unwrap_or("none");
    events::normal(
        &ctx.recorder,
        host,
        "Launched",
        format!("launched instance {} with data volume {volume}", instance.instance_id),
    )
    .await;
    Ok(Action::requeue(POLL_INTERVAL))
}

async fn send_setup(
    ctx: &HostContext,
    host: &PostgresHost,
    observation: &Observation,
    instance: &HostInstance,
    draft: &mut Draft,
) -> Result<Action, Error> {
    let Some(setup) = observation.setup.as_ref() else {
        return Ok(Action::requeue(INSTANCE_POLL_INTERVAL));
    };
    if let Some(id) = running_setup(ctx, host, instance).await? {
        // Sent just before a restart whose status write was lost: follow it to its end rather
        // than race it with a second setup. Its configuration is not known, so the wanted one
        // is sent after it unless the status already records it.
        draft.setup_followed(&id);
        let note = format!("setup command {id} already runs on {}; following it", instance.instance_id);
        events::normal(&ctx.recorder, host, "SetupFollowed", note).await;
        return Ok(Action::requeue(POLL_INTERVAL));
    }
    let id = ctx
        .cloud
        .send_command(instance, &setup.command)
        .await
        .map_err(|source| Error::Cloud { host: host.qualified_name(), source })?;
    draft.setup_sent(&id, &setup.digest);
    events::normal(
        &ctx.recorder,
        host,
        "SetupStarted",
        format!("sent the setup command {id} to {}", instance.instance_id),
    )
    .await;
    Ok(Action::requeue(POLL_INTERVAL))
}

/// The oldest setup command still running on the instance, if any. A transient failure to list
/// them retries the reconcile (never a second setup meanwhile); a lasting one is logged and
/// the setup is sent.
async fn running_setup(
    ctx: &HostContext,
    host: &PostgresHost,
    instance: &HostInstance,
) -> Result<Option<String>, Error> {
    match ctx.cloud.running_commands(instance, SETUP_PURPOSE).await {
        Ok(running) => Ok(running.into_iter().next()),
        Err(source) if source.is_transient() => Err(Error::Cloud { host: host.qualified_name(), source }),
        Err(error) => {
            tracing::warn!(host = %host.qualified_name(), %error, "cannot list running commands; sending the setup");
            Ok(None)
        }
    }
}

async fn poll_setup(
    ctx: &HostContext,
    host: &PostgresHost,
    observation: &Observation,
    instance: &HostInstance,
    id: &str,
    draft: &mut Draft,
) -> Result<Action, Error> {
    let progress = match ctx.cloud.command_status(instance, id).await {
        Ok(progress) => progress,
        Err(source) if source.is_transient() => return Err(Error::Cloud { host: host.qualified_name(), source }),
        // The cloud does not know the command (lost with a restart): it counts as failed.
        Err(source) => {
            cloud::CommandStatus::Failed { exit_code: None, stdout: String::new(), stderr_tail: source.to_string() }
        }
    };
    let uid = host.metadata.uid.as_deref().unwrap_or_default();
    let digest = draft.status.setup_digest.clone().unwrap_or_default();
    match draft.command_progress(&progress) {
        None => Ok(Action::requeue(POLL_INTERVAL)),
        Some(CommandOutcome::Succeeded { report }) => {
            let spec = observation.setup.as_ref().filter(|setup| setup.digest == digest).map(|setup| &setup.spec);
            draft.setup_succeeded(report.as_ref(), spec);
            ctx.record_setup(uid, &digest, true);
            events::normal(
                &ctx.recorder,
                host,
                "SetupSucceeded",
                format!("command {id} applied the host configuration"),
            )
            .await;
            let first_start = host.status.as_ref().is_none_or(|status| status.postgres.is_none());
            if host.recovery().is_some() && first_start {
                let timeline =
                    draft.status.postgres.as_ref().and_then(|postgres| postgres.timeline).unwrap_or_default();
                let note = format!("{} finished; PostgreSQL runs on timeline {timeline}", super::restore_note(host));
                events::normal(&ctx.recorder, host, "RestoreFinished", note).await;
            }
            Ok(Action::requeue(POLL_INTERVAL))
        }
        Some(CommandOutcome::Failed { message }) => {
            draft.setup_failed(&message);
            ctx.record_setup(uid, &digest, false);
            events::warning(&ctx.recorder, host, "SetupFailed", format!("command {id}: {message}")).await;
            Ok(Action::requeue(POLL_INTERVAL))
        }
    }
}

/// The launch request of a host: its instance and volume settings, tagged with its identity.
pub fn launch_request(host: &PostgresHost) -> Result<LaunchRequest, Error> {
    let reference = host_ref(host)?;
    let spec = &host.spec;
    let mut resource_tags: BTreeMap<String, String> = spec.instance.tags.clone();
    resource_tags.insert(tags::HOST.to_string(), reference.key());
    resource_tags.insert(tags::UID.to_string(), reference.uid.clone());
    resource_tags.insert(tags::MANAGED_BY.to_string(), tags::MANAGER.to_string());
    let attempt = host.status.as_ref().and_then(|status| status.launch_attempt).unwrap_or(0);
    let restore = host.status.as_ref().and_then(|status| status.restore.as_ref());
    Ok(LaunchRequest {
        host: reference,
        instance: InstanceSettings {
            instance_type: spec.instance.instance_type.clone(),
            image_id: spec.instance.image_id.clone(),
            subnet_id: spec.instance.subnet_id.clone(),
            security_group_ids: spec.instance.security_group_ids.clone(),
            iam_instance_profile: spec.instance.iam_instance_profile.clone(),
            root_volume_size_gib: Some(spec.instance.root_volume.size_gib),
            tags: resource_tags,
        },
        volume: VolumeSettings {
            size_gib: spec.storage.size_gib,
            volume_type: volume_type(spec.storage.volume_type).to_string(),
            iops: spec.storage.iops,
            throughput_mibps: spec.storage.throughput_mibps,
            kms_key_id: spec.storage.kms_key_id.clone(),
            snapshot_id: restore.and_then(|restore| restore.snapshot_id.clone().filter(|_| restore.from_snapshot())),
            fast_snapshot_restore: host.recovery().is_some_and(|recovery| recovery.fast_snapshot_restore),
        },
        attempt: u32::try_from(attempt).unwrap_or_default(),
    })
}

fn volume_type(volume_type: VolumeType) -> &'static str {
    match volume_type {
        VolumeType::Gp3 => "gp3",
        VolumeType::Gp2 => "gp2",
        VolumeType::Io1 => "io1",
        VolumeType::Io2 => "io2",
    }
}
