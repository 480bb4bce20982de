//! The host's EC2 instance: found by its tags, launched once, remembered while EC2's eventual
//! consistency hides it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, Instance, InstanceStateName, InstanceType};

use super::AwsCloud;
use super::error::{classify, has_code};
use super::request;
use super::tags::{filter, tag_filter};
use crate::cloud::{CloudError, HostInstance, HostRef, InstanceState, LaunchRequest, tags};

/// States of an instance that still is the host's.
pub(crate) const LIVE_STATES: &[&str] = &["pending", "running", "stopping", "stopped"];
/// States of an instance that termination still has to wait for.
pub(crate) const TERMINABLE_STATES: &[&str] = &["pending", "running", "stopping", "stopped", "shutting-down"];

/// Instances this process launched recently, per host uid: DescribeInstances may not show a new
/// instance for a while, and during that time it must count as pending, never as missing.
#[derive(Debug, Default)]
pub(crate) struct RecentLaunches(Mutex<HashMap<String, (String, Instant)>>);

impl RecentLaunches {
    pub(crate) fn remember(&self, uid: &str, instance_id: &str) {
        let mut launches = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        launches.insert(uid.to_string(), (instance_id.to_string(), Instant::now()));
    }

    /// The instance launched for `uid` less than `within` ago.
    pub(crate) fn recent(&self, uid: &str, within: Duration) -> Option<String> {
        let mut launches = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        launches.retain(|_, (_, at)| at.elapsed() < within);
        launches.get(uid).map(|(instance_id, _)| instance_id.clone())
    }

    pub(crate) fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(uid);
    }
}

/// What EC2 shows of a host's instance.
pub(crate) enum Sighting {
    Visible(Box<Instance>),
    /// Launched by this process moments ago; DescribeInstances does not know it yet.
    NotVisibleYet(String),
}

/// Our view of an EC2 instance state.
pub(crate) fn state_of(instance: &Instance) -> InstanceState {
    match instance.state().and_then(|state| state.name()) {
        Some(InstanceStateName::Running) => InstanceState::Running,
        Some(InstanceStateName::Stopping) => InstanceState::Stopping,
        Some(InstanceStateName::Stopped) => InstanceState::Stopped,
        Some(InstanceStateName::ShuttingDown) => InstanceState::ShuttingDown,
        Some(InstanceStateName::Terminated) => InstanceState::Terminated,
        _ => InstanceState::Pending,
    }
}

/// EC2's name of the instance's state (`running`, `shutting-down`, …).
fn state_name(instance: &Instance) -> &str {
    instance.state().and_then(|state| state.name()).map_or("pending", InstanceStateName::as_str)
}

fn is_gone(instance: &Instance) -> bool {
    matches!(state_of(instance), InstanceState::Terminated | InstanceState::ShuttingDown)
}

/// A HostInstance from what EC2 reports, before volume and agent are known.
fn host_instance(instance: &Instance, volume_id: Option<String>, agent_online: bool) -> HostInstance {
    HostInstance {
        instance_id: instance.instance_id().unwrap_or_default().to_string(),
        volume_id,
        state: state_of(instance),
        private_ip: instance.private_ip_address().map(str::to_string),
        availability_zone: instance.placement().and_then(|placement| placement.availability_zone()).map(str::to_string),
        agent_online,
    }
}

impl AwsCloud {
    /// The host's instances in one of `states`, oldest first.
    pub(crate) async fn tagged_instances(&self, host: &HostRef, states: &[&str]) -> Result<Vec<Instance>, CloudError> {
        let filters: Vec<Filter> = vec![
            tag_filter(tags::UID, &host.uid),
            tag_filter(tags::HOST, &host.key()),
            filter("instance-state-name", states),
        ];
        let mut instances = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let page = self
                .retry(|| {
                    self.ec2
                        .describe_instances()
                        .set_filters(Some(filters.clone()))
                        .set_next_token(next_token.clone())
                        .send()
                })
                .await
                .map_err(|error| classify("ec2", "describe instances", &error))?;
            instances
                .extend(page.reservations().iter().flat_map(|reservation| reservation.instances().iter().cloned()));
            next_token = page.next_token().filter(|token| !token.is_empty()).map(str::to_string);
            if next_token.is_none() {
                break;
            }
        }
        instances.sort_by_key(|instance| instance.launch_time().map(|time| (time.secs(), time.subsec_nanos())));
        Ok(instances)
    }

    /// One instance by id; `None` when EC2 does not know it (yet).
    pub(crate) async fn instance_by_id(&self, instance_id: &str) -> Result<Option<Instance>, CloudError> {
        match self.retry(|| self.ec2.describe_instances().instance_ids(instance_id).send()).await {
            Ok(output) => {
                Ok(output.reservations().iter().flat_map(|reservation| reservation.instances()).next().cloned())
            }
            Err(error) if has_code(&error, "InvalidInstanceID.NotFound") => Ok(None),
            Err(error) => Err(classify("ec2", "describe instance", &error)),
        }
    }

    /// The host's instance in one of `states`: by tags, or the one this process just launched.
    pub(crate) async fn sight(&self, host: &HostRef, states: &[&str]) -> Result<Option<Sighting>, CloudError> {
        let mut instances = self.tagged_instances(host, states).await?;
        if instances.len() > 1 {
            let ids: Vec<&str> = instances.iter().filter_map(Instance::instance_id).collect();
            tracing::warn!(host = %host.key(), ?ids, "several instances carry this host's tags; using the oldest");
        }
        if !instances.is_empty() {
            return Ok(Some(Sighting::Visible(Box::new(instances.remove(0)))));
        }
        let Some(instance_id) = self.launches.recent(&host.uid, self.options.launch_visibility) else {
            return Ok(None);
        };
        match self.instance_by_id(&instance_id).await? {
            None => Ok(Some(Sighting::NotVisibleYet(instance_id))),
            Some(instance) if states.contains(&state_name(&instance)) => {
                Ok(Some(Sighting::Visible(Box::new(instance))))
            }
            Some(_) => {
                self.launches.forget(&host.uid);
                Ok(None)
            }
        }
    }

    /// The host as it is now: instance, attached data volume, agent liveness.
    pub(crate) async fn find(&self, host: &HostRef) -> Result<Option<HostInstance>, CloudError> {
        match self.sight(host, LIVE_STATES).await? {
            None => Ok(None),
            Some(Sighting::NotVisibleYet(instance_id)) => Ok(Some(HostInstance {
                instance_id,
                volume_id: None,
                state: InstanceState::Pending,
                private_ip: None,
                availability_zone: None,
                agent_online: false,
            })),
            Some(Sighting::Visible(instance)) => {
                let volume_id = self.converge_data_volume(host, &instance).await?;
                let running = state_of(&instance) == InstanceState::Running;
                let agent_online = running && self.probe.is_online(instance.instance_id().unwrap_or_default()).await;
                Ok(Some(host_instance(&instance, volume_id, agent_online)))
            }
        }
    }

    /// Launches the host unless it exists: find by tags first, then one RunInstances whose
    /// ClientToken makes a repeated call (after a crash or a timeout) return the same instance.
    pub(crate) async fn launch(&self, launch: &LaunchRequest) -> Result<HostInstance, CloudError> {
        let placement = request::validate(launch)?;
        if let Some(existing) = self.find(&launch.host).await? {
            return Ok(existing);
        }
        let adopt = match launch.volume.snapshot_id.as_deref() {
            Some(snapshot_id) => Some(self.volume_from_snapshot(launch, placement.subnet_id, snapshot_id).await?),
            None => self.volume_to_adopt(&launch.host, placement.subnet_id).await?,
        };
        let image = self.launch_image(&launch.instance).await?;
        let token = request::client_token(&launch.host.uid, launch.attempt);
        let devices = request::block_devices(launch, &image.root_device, adopt.is_some());
        let tag_specifications = request::tag_specifications(launch, adopt.as_deref());
        let output = self
            .retry(|| {
                self.ec2
                    .run_instances()
                    .image_id(&image.image_id)
                    .instance_type(InstanceType::from(launch.instance.instance_type.as_str()))
                    .min_count(1)
                    .max_count(1)
                    .client_token(&token)
                    .subnet_id(placement.subnet_id)
                    .set_security_group_ids(Some(placement.security_group_ids.to_vec()))
                    .iam_instance_profile(request::instance_profile(placement.instance_profile))
                    .metadata_options(request::metadata_options())
                    .set_block_device_mappings(Some(devices.clone()))
                    .set_tag_specifications(Some(tag_specifications.clone()))
                    .send()
            })
            .await
            .map_err(|error| classify("ec2", "launch instance", &error))?;
        let Some(instance) = output.instances().first() else {
            return Err(CloudError::Transient {
                action: "launch instance",
                message: "RunInstances returned no instance".into(),
            });
        };
        let instance_id = instance.instance_id().unwrap_or_default();
        if is_gone(instance) {
            return Err(CloudError::Permanent {
                action: "launch instance",
                message: format!(
                    "EC2 answered launch token {token} with instance {instance_id}, which is already terminated \
                     (a token is answered with its first instance): the next launch attempt uses a new token"
                ),
            });
        }
        self.launches.remember(&launch.host.uid, instance_id);
        tracing::info!(host = %launch.host.key(), instance_id, image = %image.image_id, adopt = ?adopt, "launched instance");
        Ok(host_instance(instance, None, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_launch_expires() {
        let launches = RecentLaunches::default();
        launches.remember("uid-1", "i-1");
        assert_eq!(launches.recent("uid-1", Duration::from_secs(60)).as_deref(), Some("i-1"));
        assert_eq!(launches.recent("uid-2", Duration::from_secs(60)), None);
        assert_eq!(launches.recent("uid-1", Duration::ZERO), None);
        assert_eq!(launches.recent("uid-1", Duration::from_secs(60)), None, "expired entries are dropped");
        launches.remember("uid-1", "i-2");
        launches.forget("uid-1");
        assert_eq!(launches.recent("uid-1", Duration::from_secs(60)), None);
    }
}
