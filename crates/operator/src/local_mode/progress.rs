//! Progress on stdout while `local run` runs: one line per host phase change (watched on the
//! PostgresHosts' status), per finished backup run (the BackupPolicies' status) and per event the
//! controllers record (commands sent and finished, backups started, deletions).
//!
//! ```text
//! 12:00:01  postgreshost/primary  Pending → Provisioning: launching the instance
//! 12:00:02  postgreshost/primary  SetupStarted: sent the setup command cmd-… to local-3f2a…
//! 12:00:09  postgreshost/primary  Configuring → Ready (127.0.0.1:40123): PostgreSQL 15.8 …
//! 12:01:00  backuppolicy/demo     BackupStarted: base backup started on default/primary
//! 12:01:04  backuppolicy/demo     backup base_20250101T120100Z_… of default/primary committed
//! ```

use std::collections::HashMap;
use std::io::Write;

use futures::{StreamExt, stream};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use pgec2_api::{BackupPolicy, BackupRun, HostPhase, PostgresHost};

use super::kinds::Kind;
use super::manifests::ObjectKey;

/// What a progress line is about, per host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostView {
    pub phase: Option<HostPhase>,
    pub message: Option<String>,
    pub endpoint: Option<String>,
}

impl HostView {
    pub fn of(host: &PostgresHost) -> Self {
        let status = host.status.as_ref();
        Self {
            phase: status.and_then(|status| status.phase),
            message: status.and_then(|status| status.message.clone()),
            endpoint: status
                .and_then(|status| status.endpoint.as_ref())
                .map(|endpoint| format!("{}:{}", endpoint.host, endpoint.port)),
        }
    }
}

/// The line for a host whose view changed from `previous`; none when the phase did not change.
pub fn host_line(previous: Option<&HostView>, current: &HostView) -> Option<String> {
    let phase = current.phase?;
    let before = previous.and_then(|view| view.phase);
    if before == Some(phase) {
        return None;
    }
    let mut line = match before {
        Some(before) => format!("{before} → {phase}"),
        None => phase.to_string(),
    };
    if let (HostPhase::Ready, Some(endpoint)) = (phase, &current.endpoint) {
        line.push_str(&format!(" ({endpoint})"));
    }
    if let Some(message) = current.message.as_deref().filter(|message| !message.is_empty()) {
        line.push_str(": ");
        line.push_str(message.lines().next().unwrap_or_default());
    }
    Some(line)
}

/// What a progress line is about, per policy: its newest backup runs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyView {
    pub succeeded: Option<BackupRun>,
    pub failed: Option<BackupRun>,
}

impl PolicyView {
    pub fn of(policy: &BackupPolicy) -> Self {
        let status = policy.status.as_ref();
        Self {
            succeeded: status.and_then(|status| status.last_successful_backup.clone()),
            failed: status.and_then(|status| status.last_failed_backup.clone()),
        }
    }
}

/// The lines for backup runs that finished since `previous` (none at the first sight).
pub fn policy_lines(previous: Option<&PolicyView>, current: &PolicyView) -> Vec<String> {
    let Some(previous) = previous else { return Vec::new() };
    let mut lines = Vec::new();
    if let Some(run) = current.succeeded.as_ref().filter(|run| previous.succeeded.as_ref() != Some(run)) {
        lines.push(format!("backup {} of {} committed", run.backup.as_deref().unwrap_or("<unnamed>"), run.host));
    }
    if let Some(run) = current.failed.as_ref().filter(|run| previous.failed.as_ref() != Some(run)) {
        lines.push(format!("warning: backup of {} failed: {}", run.host, run.message.as_deref().unwrap_or_default()));
    }
    lines
}

/// Events whose news the status lines tell (phase changes, backup results).
const EVENTS_SHOWN_BY_STATUS: [&str; 3] = ["Ready", "BackupSucceeded", "BackupFailed"];

/// The line for an event the controllers recorded: `reason: note`, `warning` first for
/// warnings. A repeat (the recorder counts repeats of a reason on one Event, keeping the first
/// note) says only how often.
pub fn event_line(event: &KubeEvent) -> Option<(String, String)> {
    let regarding = event.regarding.as_ref()?;
    let reason = event.reason.as_deref().unwrap_or_default();
    if EVENTS_SHOWN_BY_STATUS.contains(&reason) {
        return None;
    }
    let kind = regarding.kind.as_deref().and_then(|kind| Kind::ALL.into_iter().find(|known| known.name() == kind))?;
    let key = ObjectKey {
        kind,
        namespace: regarding.namespace.clone().unwrap_or_default(),
        name: regarding.name.clone().unwrap_or_default(),
    };
    let warning = if event.type_.as_deref() == Some("Warning") { "warning " } else { "" };
    if let Some(series) = event.series.as_ref() {
        return Some((key.to_string(), format!("{warning}{reason} again ({} times)", series.count)));
    }
    let note = event.note.as_deref().unwrap_or_default();
    Some((key.to_string(), format!("{warning}{reason}: {}", note.lines().next().unwrap_or_default())))
}

/// Something a watch reported.
enum Update {
    Host(Box<watcher::Event<PostgresHost>>),
    Policy(Box<watcher::Event<BackupPolicy>>),
    Event(Box<watcher::Event<KubeEvent>>),
}

/// Prints progress lines until the client's watches end (the task is dropped at shutdown).
pub async fn follow(client: kube::Client) {
    let hosts = watcher(Api::<PostgresHost>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|event| event.map(|event| Update::Host(Box::new(event))));
    let policies = watcher(Api::<BackupPolicy>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|event| event.map(|event| Update::Policy(Box::new(event))));
    let events = watcher(Api::<KubeEvent>::all(client), watcher::Config::default())
        .default_backoff()
        .map(|event| event.map(|event| Update::Event(Box::new(event))));
    let mut updates = std::pin::pin!(stream::select(stream::select(hosts, policies), events));
    let mut views: HashMap<String, HostView> = HashMap::new();
    let mut policy_views: HashMap<String, PolicyView> = HashMap::new();
    let mut events = EventLines::default();
    while let Some(update) = updates.next().await {
        match update {
            Ok(Update::Host(event)) => host_update(&mut views, *event),
            Ok(Update::Policy(event)) => policy_update(&mut policy_views, *event),
            Ok(Update::Event(event)) => events.update(*event),
            Err(error) => tracing::debug!(%error, "progress watch interrupted; it resumes"),
        }
    }
}

/// Prints a line when a host's phase changed or it was deleted.
fn host_update(views: &mut HashMap<String, HostView>, event: watcher::Event<PostgresHost>) {
    match event {
        watcher::Event::Apply(host) | watcher::Event::InitApply(host) => {
            let key = host_key(&host);
            let view = HostView::of(&host);
            if let Some(line) = host_line(views.get(&key), &view) {
                print_line(&key, &line);
            }
            views.insert(key, view);
        }
        watcher::Event::Delete(host) => {
            let key = host_key(&host);
            views.remove(&key);
            print_line(&key, "deleted");
        }
        watcher::Event::Init | watcher::Event::InitDone => {}
    }
}

/// Prints a line per backup run that finished.
fn policy_update(views: &mut HashMap<String, PolicyView>, event: watcher::Event<BackupPolicy>) {
    match event {
        watcher::Event::Apply(policy) | watcher::Event::InitApply(policy) => {
            let key = ObjectKey {
                kind: Kind::BackupPolicy,
                namespace: policy.namespace().unwrap_or_default(),
                name: policy.name_any(),
            }
            .to_string();
            let view = PolicyView::of(&policy);
            for line in policy_lines(views.get(&key), &view) {
                print_line(&key, &line);
            }
            views.insert(key, view);
        }
        watcher::Event::Delete(_) | watcher::Event::Init | watcher::Event::InitDone => {}
    }
}

/// Prints each new event, and each repeat of it (the recorder counts repeats of the same reason
/// on one Event in `series`); events of earlier runs (the first listing) are history.
#[derive(Default)]
struct EventLines {
    /// Repeats seen per Event name.
    seen: HashMap<String, i32>,
    listed: bool,
}

impl EventLines {
    fn update(&mut self, event: watcher::Event<KubeEvent>) {
        match event {
            watcher::Event::InitDone => self.listed = true,
            watcher::Event::Apply(event) | watcher::Event::InitApply(event) => {
                let count = event.series.as_ref().map_or(1, |series| series.count);
                let previous = self.seen.insert(event.name_any(), count);
                let new = previous.is_none_or(|previous| count > previous);
                if let (true, true, Some((key, line))) = (new, self.listed, event_line(&event)) {
                    print_line(&key, &line);
                }
            }
            watcher::Event::Delete(_) | watcher::Event::Init => {}
        }
    }
}

fn host_key(host: &PostgresHost) -> String {
    ObjectKey { kind: Kind::PostgresHost, namespace: host.namespace().unwrap_or_default(), name: host.name_any() }
        .to_string()
}

/// Writes one timestamped line to stdout (a closed stdout is ignored).
pub fn print_line(subject: &str, text: &str) {
    let time = Timestamp::now().strftime("%H:%M:%S");
    let _ = writeln!(std::io::stdout().lock(), "{time}  {subject:<22}  {text}");
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectReference;

    use super::*;

    fn view(phase: HostPhase, message: &str) -> HostView {
        HostView { phase: Some(phase), message: Some(message.into()), endpoint: Some("127.0.0.1:40123".into()) }
    }

    #[test]
    fn a_phase_change_is_one_line_with_the_message() {
        let before = view(HostPhase::Provisioning, "launching");
        let after = view(HostPhase::Configuring, "setting up PostgreSQL\nsecond line");
        assert_eq!(
            host_line(Some(&before), &after).as_deref(),
            Some("Provisioning → Configuring: setting up PostgreSQL")
        );
    }

    #[test]
    fn ready_shows_where_to_connect() {
        let line = host_line(Some(&view(HostPhase::Configuring, "")), &view(HostPhase::Ready, "PostgreSQL 15.8"));
        assert_eq!(line.as_deref(), Some("Configuring → Ready (127.0.0.1:40123): PostgreSQL 15.8"));
    }

    #[test]
    fn a_status_change_within_a_phase_prints_nothing() {
        let before = view(HostPhase::Configuring, "step one");
        assert_eq!(host_line(Some(&before), &view(HostPhase::Configuring, "step two")), None);
    }

    #[test]
    fn the_first_sight_of_a_host_prints_its_phase() {
        assert_eq!(host_line(None, &view(HostPhase::Pending, "")).as_deref(), Some("Pending"));
        assert_eq!(host_line(None, &HostView::default()), None, "no status yet");
    }

    fn event(kind: &str, type_: &str, reason: &str, note: &str) -> KubeEvent {
        KubeEvent {
            regarding: Some(ObjectReference {
                kind: Some(kind.into()),
                namespace: Some("default".into()),
                name: Some("demo".into()),
                ..ObjectReference::default()
            }),
            type_: Some(type_.into()),
            reason: Some(reason.into()),
            note: Some(note.into()),
            ..KubeEvent::default()
        }
    }

    #[test]
    fn events_name_their_object_and_mark_warnings() {
        let started = event("BackupPolicy", "Normal", "BackupStarted", "base backup started on default/primary");
        assert_eq!(
            event_line(&started),
            Some((
                "backuppolicy/demo".to_string(),
                "BackupStarted: base backup started on default/primary".to_string()
            ))
        );
        let failed = event("PostgresHost", "Warning", "SetupFailed", "command cmd-1: initdb failed");
        assert_eq!(
            event_line(&failed).map(|(_, line)| line).as_deref(),
            Some("warning SetupFailed: command cmd-1: initdb failed")
        );
    }

    #[test]
    fn a_repeated_event_says_how_often_not_its_first_note() {
        let mut repeated = event("PostgresHost", "Normal", "SetupStarted", "sent the setup command cmd-1");
        repeated.series = Some(k8s_openapi::api::events::v1::EventSeries {
            count: 3,
            last_observed_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(Timestamp::now()),
        });
        assert_eq!(event_line(&repeated).map(|(_, line)| line).as_deref(), Some("SetupStarted again (3 times)"));
    }

    fn run(backup: &str, message: Option<&str>) -> BackupRun {
        BackupRun {
            host: "default/primary".into(),
            backup: Some(backup.into()),
            start_time: None,
            finish_time: None,
            message: message.map(Into::into),
        }
    }

    #[test]
    fn each_finished_backup_run_is_one_line_with_its_name() {
        let first = PolicyView { succeeded: Some(run("base_1", None)), failed: None };
        assert!(policy_lines(None, &first).is_empty(), "the state at the start is not news");
        let second = PolicyView { succeeded: Some(run("base_2", None)), failed: None };
        assert_eq!(policy_lines(Some(&first), &second), ["backup base_2 of default/primary committed"]);
        let failed = PolicyView { failed: Some(run("base_3", Some("disk full"))), ..second.clone() };
        assert_eq!(policy_lines(Some(&second), &failed), ["warning: backup of default/primary failed: disk full"]);
        assert!(policy_lines(Some(&failed), &failed).is_empty());
    }

    #[test]
    fn ready_events_and_foreign_kinds_are_left_to_other_lines() {
        assert_eq!(event_line(&event("PostgresHost", "Normal", "Ready", "ready")), None);
        assert_eq!(event_line(&event("BackupPolicy", "Normal", "BackupSucceeded", "base_1 committed")), None);
        assert_eq!(event_line(&event("Lease", "Normal", "LeaderElection", "won")), None);
    }
}
