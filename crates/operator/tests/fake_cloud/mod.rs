//! A fake [`Cloud`] for controller scenarios: instances, data volumes, snapshots and commands
//! kept in memory, every call recorded, and faults injected on demand:
//!
//! - throttling: the next calls of an operation answer `Throttled` and change nothing;
//! - eventual consistency: a launched instance stays invisible to `find_host` for some calls;
//! - a data volume stuck `creating` (its instance stays pending, and it cannot be deleted);
//! - a run command lost (sent, then unknown to the cloud);
//! - the operator killed between two calls: at a chosen call the fake signals [`FakeCloud::killed`]
//!   and never answers, so the harness drops the reconcile there, before or after the call took
//!   effect.
//!
//! The state outlives the operators that use it, as a real cloud outlives operator restarts.
//! Calls are idempotent as the `Cloud` trait requires: a launch with a token seen before
//! returns the instance that token created (EC2's client token).

#![allow(dead_code)]

pub mod harness;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use pgec2_operator::cloud::{
    Cloud, CloudError, CommandStatus, HostCommand, HostInstance, HostRef, InstanceState, LaunchRequest,
    TerminationProgress, VolumeDisposal, VolumeSettings,
};
use tokio::sync::Notify;

/// The calls of the `Cloud` trait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Find,
    Launch,
    Resize,
    Terminate,
    Send,
    CommandStatus,
    Running,
}

/// One call as the cloud saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub operation: Operation,
    /// The host (`namespace/name`) or instance the call was about.
    pub target: String,
    /// The call was throttled and changed nothing.
    pub throttled: bool,
}

/// Where the operator dies relative to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// The call never reaches the cloud.
    Before,
    /// The call takes effect, its answer never reaches the operator.
    After,
}

/// Faults to inject; counts go down as they are used.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// The next this-many calls of each operation are throttled.
    pub throttle: BTreeMap<Operation, u32>,
    /// A launched instance is missed by this many `find_host` calls.
    pub invisible_finds: u32,
    /// A new data volume stays `creating` for this many `find_host` calls of its host.
    pub volume_creating_finds: u32,
    /// The next this-many commands sent are lost.
    pub lose_commands: u32,
    /// A command runs on its host for this many further cloud calls (of any kind, the fake's
    /// clock), then succeeds, whether or not anyone asks about it.
    pub command_calls: u32,
    /// The operator dies at this call (1-based over all calls) at this moment.
    pub kill: Option<(usize, Moment)>,
}

/// An instance of the fake cloud.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub host_uid: String,
    pub state: InstanceState,
    pub volume_id: String,
    invisible_finds: u32,
}

/// Where a data volume stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeState {
    Creating {
        finds_left: u32,
    },
    InUse,
    /// Detached and kept for a new host of the same name (deletionPolicy Retain).
    Released,
    /// A final snapshot is being taken before deletion.
    Snapshotting,
    Deleted,
}

/// A data volume of the fake cloud.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub id: String,
    /// `namespace/name` of the host it was made for.
    pub host_key: String,
    /// The uid of the host using it; `None` once released.
    pub host_uid: Option<String>,
    pub state: VolumeState,
}

#[derive(Clone, Debug)]
struct Command {
    instance_id: String,
    purpose: String,
    lost: bool,
    /// The fake's clock (calls made) when it finishes.
    finishes_at: usize,
}

impl Command {
    fn runs(&self, now: usize) -> bool {
        !self.lost && now < self.finishes_at
    }
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    faults: Faults,
    next_id: u64,
    instances: BTreeMap<String, Instance>,
    volumes: BTreeMap<String, Volume>,
    snapshots: Vec<String>,
    tokens: BTreeMap<String, String>,
    commands: BTreeMap<String, Command>,
    /// Commands sent while another one of the same purpose still ran on the same instance.
    overlapping_sends: usize,
}

impl State {
    /// A new id shaped like AWS's (`vol-` and `i-` with 17 hex digits).
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}-{:017x}", self.next_id)
    }

    fn host_instance(&self, instance: &Instance) -> HostInstance {
        HostInstance {
            instance_id: instance.id.clone(),
            volume_id: Some(instance.volume_id.clone()),
            state: instance.state,
            private_ip: Some("10.0.0.10".to_string()),
            availability_zone: Some("fake-1a".to_string()),
            agent_online: instance.state == InstanceState::Running,
        }
    }
}

/// The fake cloud; clone the `Arc` to hand the same cloud to each new operator.
#[derive(Default)]
pub struct FakeCloud {
    state: Mutex<State>,
    killed: Notify,
}

impl FakeCloud {
    pub fn new(faults: Faults) -> Arc<Self> {
        let cloud = Self::default();
        cloud.lock().faults = faults;
        Arc::new(cloud)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Changes the faults still to come.
    pub fn faults(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.lock().faults);
    }

    /// Resolves when the operator was killed at a call.
    pub async fn killed(&self) {
        self.killed.notified().await;
    }

    /// Commands sent while another of the same purpose still ran on the same instance (two
    /// setups racing on one host).
    pub fn overlapping_sends(&self) -> usize {
        self.lock().overlapping_sends
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Instances of host `uid` that are not terminated.
    pub fn live_instances(&self, uid: &str) -> Vec<Instance> {
        let state = self.lock();
        let live = state.instances.values().filter(|instance| instance.state != InstanceState::Terminated);
        live.filter(|instance| instance.host_uid == uid).cloned().collect()
    }

    /// Every instance not terminated, of any host.
    pub fn all_live_instances(&self) -> Vec<Instance> {
        let state = self.lock();
        state.instances.values().filter(|instance| instance.state != InstanceState::Terminated).cloned().collect()
    }

    /// Volumes made for host `key` (`namespace/name`) that are not deleted.
    pub fn volumes(&self, key: &str) -> Vec<Volume> {
        let state = self.lock();
        let kept = state.volumes.values().filter(|volume| volume.state != VolumeState::Deleted);
        kept.filter(|volume| volume.host_key == key).cloned().collect()
    }

    /// Final snapshots taken of volumes of host `key`.
    pub fn snapshots(&self, key: &str) -> Vec<String> {
        self.lock().snapshots.iter().filter(|snapshot| snapshot.ends_with(&format!("of {key}"))).cloned().collect()
    }

    /// Records a call, throttles it or kills the operator before it, as the faults say. Returns
    /// the call's number when it goes ahead.
    async fn enter(&self, operation: Operation, target: &str) -> Result<usize, CloudError> {
        let (number, throttled, kill) = {
            let mut state = self.lock();
            let throttled = state.faults.throttle.get_mut(&operation).is_some_and(|left| {
                let throttle = *left > 0;
                *left = left.saturating_sub(1);
                throttle
            });
            state.calls.push(Call { operation, target: target.to_string(), throttled });
            let number = state.calls.len();
            (number, throttled, state.faults.kill)
        };
        if kill == Some((number, Moment::Before)) {
            self.die().await;
        }
        if throttled {
            let message = format!("Rate exceeded ({operation:?} on {target})");
            return Err(CloudError::Throttled { service: "fake", message });
        }
        Ok(number)
    }

    /// Kills the operator after call `number` when the faults say so.
    async fn leave<T>(&self, number: usize, answer: T) -> T {
        if self.lock().faults.kill == Some((number, Moment::After)) {
            self.die().await;
        }
        answer
    }

    async fn die(&self) {
        self.lock().faults.kill = None;
        self.killed.notify_one();
        std::future::pending::<()>().await;
    }

    fn launch_now(&self, request: &LaunchRequest) -> HostInstance {
        let mut state = self.lock();
        let token = format!("{}-{}", request.host.uid, request.attempt);
        if let Some(instance) = state.tokens.get(&token).and_then(|id| state.instances.get(id)) {
            return state.host_instance(instance);
        }
        let key = request.host.key();
        let released =
            state.volumes.values_mut().find(|volume| volume.host_key == key && volume.state == VolumeState::Released);
        let volume_id = match released {
            Some(volume) => {
                volume.host_uid = Some(request.host.uid.clone());
                volume.state = VolumeState::InUse;
                volume.id.clone()
            }
            None => {
                let id = state.id("vol");
                let finds_left = state.faults.volume_creating_finds;
                let volume_state =
                    if finds_left > 0 { VolumeState::Creating { finds_left } } else { VolumeState::InUse };
                let volume = Volume {
                    id: id.clone(),
                    host_key: key,
                    host_uid: Some(request.host.uid.clone()),
                    state: volume_state,
                };
                state.volumes.insert(id.clone(), volume);
                id
            }
        };
        let id = state.id("i");
        let invisible_finds = state.faults.invisible_finds;
        let instance = Instance {
            id: id.clone(),
            host_uid: request.host.uid.clone(),
            state: InstanceState::Pending,
            volume_id,
            invisible_finds,
        };
        state.tokens.insert(token, id.clone());
        state.instances.insert(id, instance.clone());
        state.host_instance(&instance)
    }

    /// `find_host`: a pending instance starts once its volume is in use; volumes stuck
    /// creating count down; a just-launched instance may be missed.
    fn find_now(&self, host: &HostRef) -> Option<HostInstance> {
        let mut state = self.lock();
        let id = state
            .instances
            .values()
            .find(|instance| instance.host_uid == host.uid && instance.state != InstanceState::Terminated)?
            .id
            .clone();
        let volume_id = state.instances[&id].volume_id.clone();
        if let Some(volume) = state.volumes.get_mut(&volume_id)
            && let VolumeState::Creating { finds_left } = &mut volume.state
        {
            *finds_left = finds_left.saturating_sub(1);
            if *finds_left == 0 {
                volume.state = VolumeState::InUse;
            }
        }
        let volume_ready = state.volumes.get(&volume_id).is_some_and(|volume| volume.state == VolumeState::InUse);
        let instance = state.instances.get_mut(&id)?;
        if instance.invisible_finds > 0 {
            instance.invisible_finds -= 1;
            return None;
        }
        if instance.state == InstanceState::Pending && volume_ready {
            instance.state = InstanceState::Running;
        }
        let instance = instance.clone();
        Some(state.host_instance(&instance))
    }

    /// `terminate_host`, one step per call: shut the instance down, then dispose of the volume.
    fn terminate_now(&self, host: &HostRef, disposal: VolumeDisposal) -> TerminationProgress {
        let mut state = self.lock();
        let mut waiting = Vec::new();
        for instance in state.instances.values_mut().filter(|instance| instance.host_uid == host.uid) {
            match instance.state {
                InstanceState::Terminated => {}
                InstanceState::ShuttingDown => instance.state = InstanceState::Terminated,
                _ => {
                    instance.state = InstanceState::ShuttingDown;
                    waiting.push(format!("instance {} is shutting down", instance.id));
                }
            }
        }
        if !waiting.is_empty() {
            return TerminationProgress::InProgress { detail: waiting.join("; ") };
        }
        let key = host.key();
        let mut snapshots = Vec::new();
        let of_host = |volume: &&mut Volume| {
            volume.host_uid.as_deref() == Some(host.uid.as_str()) && volume.state != VolumeState::Deleted
        };
        for volume in state.volumes.values_mut().filter(of_host) {
            match (&volume.state, disposal) {
                (VolumeState::Creating { .. }, _) => waiting.push(format!("volume {} is still creating", volume.id)),
                (_, VolumeDisposal::Retain) => {
                    volume.state = VolumeState::Released;
                    volume.host_uid = None;
                }
                (VolumeState::Snapshotting, VolumeDisposal::Snapshot) => {
                    snapshots.push(format!("snap of {} of {key}", volume.id));
                    volume.state = VolumeState::Deleted;
                }
                (_, VolumeDisposal::Snapshot) => {
                    volume.state = VolumeState::Snapshotting;
                    waiting.push(format!("final snapshot of volume {} in progress", volume.id));
                }
                (_, VolumeDisposal::Delete) => volume.state = VolumeState::Deleted,
            }
        }
        state.snapshots.extend(snapshots);
        if waiting.is_empty() {
            TerminationProgress::Done
        } else {
            TerminationProgress::InProgress { detail: waiting.join("; ") }
        }
    }

    fn send_now(&self, host: &HostInstance, command: &HostCommand) -> Result<String, CloudError> {
        let mut state = self.lock();
        let running =
            state.instances.get(&host.instance_id).is_some_and(|instance| instance.state == InstanceState::Running);
        if !running {
            let message = format!("instance {} is not running", host.instance_id);
            return Err(CloudError::Transient { action: "SendCommand", message });
        }
        let now = state.calls.len();
        let overlapping = state.commands.values().any(|running| {
            running.instance_id == host.instance_id && running.purpose == command.purpose && running.runs(now)
        });
        state.overlapping_sends += usize::from(overlapping);
        let id = state.id("cmd");
        let lost = state.faults.lose_commands > 0;
        state.faults.lose_commands = state.faults.lose_commands.saturating_sub(1);
        let finishes_at = now + usize::try_from(state.faults.command_calls).unwrap_or(usize::MAX);
        let instance_id = host.instance_id.clone();
        let command = Command { instance_id, purpose: command.purpose.clone(), lost, finishes_at };
        state.commands.insert(id.clone(), command);
        Ok(id)
    }

    fn status_now(&self, command_id: &str) -> Result<CommandStatus, CloudError> {
        let state = self.lock();
        let now = state.calls.len();
        let Some(command) = state.commands.get(command_id).filter(|command| !command.lost) else {
            let message = format!("InvocationDoesNotExist: command {command_id} is not known");
            return Err(CloudError::Permanent { action: "GetCommandInvocation", message });
        };
        if command.runs(now) {
            return Ok(CommandStatus::InProgress);
        }
        Ok(CommandStatus::Succeeded { stdout: String::new() })
    }
}

#[async_trait]
impl Cloud for FakeCloud {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn find_host(&self, host: &HostRef) -> Result<Option<HostInstance>, CloudError> {
        let number = self.enter(Operation::Find, &host.key()).await?;
        let found = self.find_now(host);
        self.leave(number, Ok(found)).await
    }

    async fn launch_host(&self, request: &LaunchRequest) -> Result<HostInstance, CloudError> {
        let number = self.enter(Operation::Launch, &request.host.key()).await?;
        let instance = self.launch_now(request);
        self.leave(number, Ok(instance)).await
    }

    async fn resize_volume(&self, host: &HostInstance, _volume: &VolumeSettings) -> Result<bool, CloudError> {
        let number = self.enter(Operation::Resize, &host.instance_id).await?;
        self.leave(number, Ok(true)).await
    }

    async fn terminate_host(
        &self,
        host: &HostRef,
        disposal: VolumeDisposal,
    ) -> Result<TerminationProgress, CloudError> {
        let number = self.enter(Operation::Terminate, &host.key()).await?;
        let progress = self.terminate_now(host, disposal);
        self.leave(number, Ok(progress)).await
    }

    async fn send_command(&self, host: &HostInstance, command: &HostCommand) -> Result<String, CloudError> {
        let number = self.enter(Operation::Send, &host.instance_id).await?;
        let sent = self.send_now(host, command);
        self.leave(number, sent).await
    }

    async fn command_status(&self, host: &HostInstance, command_id: &str) -> Result<CommandStatus, CloudError> {
        let number = self.enter(Operation::CommandStatus, &host.instance_id).await?;
        let status = self.status_now(command_id);
        self.leave(number, status).await
    }

    async fn running_commands(&self, host: &HostInstance, purpose: &str) -> Result<Vec<String>, CloudError> {
        let number = self.enter(Operation::Running, &host.instance_id).await?;
        let running = {
            let state = self.lock();
            let now = state.calls.len();
            let matching = state.commands.iter().filter(|(_, command)| {
                command.instance_id == host.instance_id && command.purpose == purpose && command.runs(now)
            });
            matching.map(|(id, _)| id.clone()).collect()
        };
        self.leave(number, Ok(running)).await
    }
}

impl FakeCloud {
    /// Every volume still creating becomes ready (in use).
    pub fn finish_creating_volumes(&self) {
        for volume in self.lock().volumes.values_mut() {
            if matches!(volume.state, VolumeState::Creating { .. }) {
                volume.state = VolumeState::InUse;
            }
        }
    }
}
