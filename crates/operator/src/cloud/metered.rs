//! A [`Cloud`] that counts every call of the cloud it wraps (by action and outcome).

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Cloud, CloudError, CommandStatus, HostCommand, HostInstance, HostLayout, HostRef, LaunchRequest, SnapshotLock,
    SnapshotRequest, TerminationProgress, VolumeDisposal, VolumeSettings, VolumeSnapshot,
};
use crate::metrics::Metrics;

/// Counts calls in [`Metrics::cloud_calls`]; otherwise the wrapped cloud, unchanged.
pub struct MeteredCloud {
    inner: Arc<dyn Cloud>,
    metrics: Arc<Metrics>,
}

impl MeteredCloud {
    pub fn new(inner: Arc<dyn Cloud>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn count<T>(&self, action: &str, result: Result<T, CloudError>) -> Result<T, CloudError> {
        let outcome = match &result {
            Ok(_) => "success",
            Err(error) if error.is_transient() => "transient_error",
            Err(_) => "permanent_error",
        };
        self.metrics.cloud_call(self.inner.name(), action, outcome);
        result
    }
}

#[async_trait]
impl Cloud for MeteredCloud {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn find_host(&self, host: &HostRef) -> Result<Option<HostInstance>, CloudError> {
        self.count("find_host", self.inner.find_host(host).await)
    }

    async fn launch_host(&self, request: &LaunchRequest) -> Result<HostInstance, CloudError> {
        self.count("launch_host", self.inner.launch_host(request).await)
    }

    async fn resize_volume(&self, host: &HostInstance, volume: &VolumeSettings) -> Result<bool, CloudError> {
        self.count("resize_volume", self.inner.resize_volume(host, volume).await)
    }

    async fn terminate_host(
        &self,
        host: &HostRef,
        disposal: VolumeDisposal,
    ) -> Result<TerminationProgress, CloudError> {
        self.count("terminate_host", self.inner.terminate_host(host, disposal).await)
    }

    async fn send_command(&self, host: &HostInstance, command: &HostCommand) -> Result<String, CloudError> {
        self.count("send_command", self.inner.send_command(host, command).await)
    }

    async fn command_status(&self, host: &HostInstance, command_id: &str) -> Result<CommandStatus, CloudError> {
        self.count("command_status", self.inner.command_status(host, command_id).await)
    }

    async fn running_commands(&self, host: &HostInstance, purpose: &str) -> Result<Vec<String>, CloudError> {
        self.count("running_commands", self.inner.running_commands(host, purpose).await)
    }

    async fn snapshot_volume(
        &self,
        instance: &HostInstance,
        request: &SnapshotRequest,
    ) -> Result<VolumeSnapshot, CloudError> {
        self.count("snapshot_volume", self.inner.snapshot_volume(instance, request).await)
    }

    async fn describe_snapshot(&self, snapshot_id: &str) -> Result<Option<VolumeSnapshot>, CloudError> {
        self.count("describe_snapshot", self.inner.describe_snapshot(snapshot_id).await)
    }

    async fn host_snapshots(&self, host: &HostRef) -> Result<Vec<VolumeSnapshot>, CloudError> {
        self.count("host_snapshots", self.inner.host_snapshots(host).await)
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), CloudError> {
        self.count("delete_snapshot", self.inner.delete_snapshot(snapshot_id).await)
    }

    async fn lock_snapshot(
        &self,
        snapshot_id: &str,
        lock: &SnapshotLock,
    ) -> Result<chrono::DateTime<chrono::Utc>, CloudError> {
        self.count("lock_snapshot", self.inner.lock_snapshot(snapshot_id, lock).await)
    }

    async fn snapshot_locked_until(
        &self,
        snapshot_id: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, CloudError> {
        self.count("snapshot_locked_until", self.inner.snapshot_locked_until(snapshot_id).await)
    }

    async fn host_layout(&self, host: &HostRef, instance: &HostInstance) -> Result<HostLayout, CloudError> {
        self.count("host_layout", self.inner.host_layout(host, instance).await)
    }
}
