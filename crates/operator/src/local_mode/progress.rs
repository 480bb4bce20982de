//! Progress on stdout while `local run` runs: one line per host phase change (watched on the
//! PostgresHosts' status) and per event the controllers record (commands sent and finished,
//! backups started, taken or failed, deletions).
//!
//! ```text
//! 12:00:01  postgreshost/primary  Pending → Provisioning: launching the instance
//! 12:00:02  postgreshost/primary  SetupStarted: sent the setup command cmd-… to local-3f2a…
//! 12:00:09  postgreshost/primary  Configuring → Ready (127.0.0.1:40123): PostgreSQL 15.8 …
//! 12:01:04  backuppolicy/demo     BackupSucceeded: default/primary: base_0000000100…
//! ```

use std::collections::{HashMap, HashSet};
use std::io::Write;

use futures::{StreamExt, stream};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use pgec2_api::{HostPhase, PostgresHost};

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

/// The line for an event the controllers recorded: `reason: note`, `warning` first for
/// warnings. `Ready` events are left out (the phase line says it).
pub fn event_line(event: &KubeEvent) -> Option<(String, String)> {
    let regarding = event.regarding.as_ref()?;
    let reason = event.reason.as_deref().unwrap_or_default();
    if reason == "Ready" {
        return None;
    }
    let kind = regarding.kind.as_deref().and_then(|kind| Kind::ALL.into_iter().find(|known| known.name() == kind))?;
    let key = ObjectKey {
        kind,
        namespace: regarding.namespace.clone().unwrap_or_default(),
        name: regarding.name.clone().unwrap_or_default(),
    };
    let warning = if event.type_.as_deref() == Some("Warning") { "warning " } else { "" };
    let note = event.note.as_deref().unwrap_or_default();
    Some((key.to_string(), format!("{warning}{reason}: {}", note.lines().next().unwrap_or_default())))
}

/// Something a watch reported.
enum Update {
    Host(Box<watcher::Event<PostgresHost>>),
    Event(Box<watcher::Event<KubeEvent>>),
}

/// Prints progress lines until the client's watches end (the task is dropped at shutdown).
pub async fn follow(client: kube::Client) {
    let hosts = watcher(Api::<PostgresHost>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(|event| event.map(|event| Update::Host(Box::new(event))));
    let events = watcher(Api::<KubeEvent>::all(client), watcher::Config::default())
        .default_backoff()
        .map(|event| event.map(|event| Update::Event(Box::new(event))));
    let mut updates = std::pin::pin!(stream::select(hosts, events));
    let mut views: HashMap<String, HostView> = HashMap::new();
    let mut events = EventLines::default();
    while let Some(update) = updates.next().await {
        match update {
            Ok(Update::Host(event)) => host_update(&mut views, *event),
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

/// Prints each new event once; events of earlier runs (the first listing) are history.
#[derive(Default)]
struct EventLines {
    seen: HashSet<String>,
    listed: bool,
}

impl EventLines {
    fn update(&mut self, event: watcher::Event<KubeEvent>) {
        match event {
            watcher::Event::InitDone => self.listed = true,
            watcher::Event::Apply(event) | watcher::Event::InitApply(event) => {
                let new = self.seen.insert(event.name_any());
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
        let taken = event("BackupPolicy", "Normal", "BackupSucceeded", "default/primary: base_1");
        assert_eq!(
            event_line(&taken),
            Some(("backuppolicy/demo".to_string(), "BackupSucceeded: default/primary: base_1".to_string()))
        );
        let failed = event("PostgresHost", "Warning", "SetupFailed", "command cmd-1: initdb failed");
        assert_eq!(
            event_line(&failed).map(|(_, line)| line).as_deref(),
            Some("warning SetupFailed: command cmd-1: initdb failed")
        );
    }

    #[test]
    fn ready_events_and_foreign_kinds_are_left_to_other_lines() {
        assert_eq!(event_line(&event("PostgresHost", "Normal", "Ready", "ready")), None);
        assert_eq!(event_line(&event("Lease", "Normal", "LeaderElection", "won")), None);
    }
}
