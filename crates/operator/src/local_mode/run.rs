//! `pgec2-operator local run`: load the manifests, start the hosts PostgreSQL ran on before,
//! run the controllers with the local cloud while following the files, and on the way out stop
//! the controllers, stop PostgreSQL (unless `--until-ready`), write the API state and print the
//! table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use pgec2_api::{HostPhase, PostgresHost, condition};
use pgec2_kube_memory::MemoryApiServer;

use super::hosts::{self, LocalHost};
use super::kinds::{self, Kind};
use super::pidfile::PidFile;
use super::progress::{self, print_line};
use super::sources::Sources;
use super::{LocalModeError, StateDir, get};
use crate::cli::{LocalRunArgs, default_agent_binary};
use crate::cloud::local::{LocalCloud, LocalCloudConfig};
use crate::context::Config;
use crate::metrics::Metrics;
use crate::operator::Operator;

/// How often the manifest files and the hosts' readiness are looked at.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long `--until-ready` waits without `--timeout`.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long running reconciles may take to finish at shutdown.
const OPERATOR_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Subject of the lines about manifest files and the run itself.
const SUBJECT: &str = "local";

/// Why the run ends.
enum Ending {
    /// SIGINT or SIGTERM (or `--timeout` without `--until-ready`): stop the hosts.
    Stopped,
    /// `--until-ready`: every host is Ready; the hosts keep running.
    Ready,
    /// `--until-ready` gave up; the hosts keep running for inspection.
    NotReady(LocalModeError),
}

/// Runs local mode until interrupted (or until every host is Ready with `--until-ready`).
pub async fn run(args: LocalRunArgs) -> Result<(), LocalModeError> {
    let state = StateDir::resolve(args.state.state_dir.clone());
    state.create()?;
    let _pid_file = PidFile::claim(state.root())?;
    let server = kinds::api_server(&state.api_dir())?;
    let agent = args.agent_binary.clone().unwrap_or_else(default_agent_binary);
    let cloud = LocalCloud::new(LocalCloudConfig::new(state.root(), agent))?;
    let mut sources = Sources::new(args.paths.clone());
    for change in sources.load(&server)? {
        print_line(SUBJECT, &change.to_string());
    }
    boot_hosts(&server, &state).await;

    let client = server.client();
    let progress = tokio::spawn(progress::follow(client.clone()));
    let config = Config { instance_name: "pgec2-local".into(), ..Config::default() };
    let operator = Operator::builder(client, Arc::new(cloud)).config(config).build();
    let metrics = operator.metrics();
    let (stop_operator, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(operator.run(async move {
        let _ = stopped.await;
    }));

    let ending = supervise(&server, &mut sources, &state, &metrics, &args).await;

    print_line(SUBJECT, "stopping the controllers");
    let _ = stop_operator.send(());
    if tokio::time::timeout(OPERATOR_STOP_TIMEOUT, operator).await.is_err() {
        print_line(SUBJECT, "the controllers did not stop in time; leaving their work unfinished");
    }
    progress.abort();
    let stop_result = match ending {
        Ending::Stopped => stop_hosts(&state).await,
        Ending::Ready | Ending::NotReady(_) => {
            print_line(
                SUBJECT,
                &format!(
                    "hosts keep running; stop them with `pgec2-operator local stop --state-dir {}`",
                    state.root().display()
                ),
            );
            Ok(())
        }
    };
    server.flush()?;
    println!();
    print!("{}", get::table_of(&server, &Kind::ALL));
    stop_result?;
    match ending {
        Ending::NotReady(error) => Err(error),
        Ending::Stopped | Ending::Ready => Ok(()),
    }
}

/// Follows the manifest files until a signal, the timeout or (with `--until-ready`) the hosts'
/// readiness ends the run.
async fn supervise(
    server: &MemoryApiServer,
    sources: &mut Sources,
    state: &StateDir,
    metrics: &Metrics,
    args: &LocalRunArgs,
) -> Ending {
    let started = Instant::now();
    let limit = match (args.timeout, args.until_ready) {
        (Some(seconds), _) => Some(Duration::from_secs(seconds)),
        (None, true) => Some(DEFAULT_READY_TIMEOUT),
        (None, false) => None,
    };
    let signal = crate::run::shutdown_signal();
    tokio::pin!(signal);
    loop {
        for change in sources.sync(server, Instant::now()) {
            print_line(SUBJECT, &change.to_string());
        }
        if args.until_ready {
            match readiness(server, state, metrics) {
                Readiness::AllReady => {
                    print_line(SUBJECT, "every PostgresHost is Ready");
                    return Ending::Ready;
                }
                Readiness::Failed { name, message } => {
                    return Ending::NotReady(LocalModeError::HostFailed { name, message });
                }
                Readiness::Waiting(_) => {}
            }
        }
        if let Some(limit) = limit.filter(|limit| started.elapsed() >= *limit) {
            if !args.until_ready {
                print_line(SUBJECT, &format!("--timeout of {}s reached", limit.as_secs()));
                return Ending::Stopped;
            }
            let waiting = match readiness(server, state, metrics) {
                Readiness::Waiting(names) => names.join(", "),
                _ => String::new(),
            };
            return Ending::NotReady(LocalModeError::Timeout { seconds: limit.as_secs(), waiting });
        }
        tokio::select! {
            () = &mut signal => {
                print_line(SUBJECT, "interrupted");
                return Ending::Stopped;
            }
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// Where the PostgresHosts are on the way to Ready.
enum Readiness {
    AllReady,
    Failed { name: String, message: String },
    Waiting(Vec<String>),
}

/// Ready means: phase Ready for the current generation, its PostgreSQL runs here, and the
/// controller of this run has looked at the hosts (a status from an earlier run is not enough).
fn readiness(server: &MemoryApiServer, state: &StateDir, metrics: &Metrics) -> Readiness {
    let local = hosts::scan(state.root()).unwrap_or_default();
    let hosts = stored_hosts(server);
    let mut waiting = Vec::new();
    if metrics.reconcile_count(crate::host::KIND) < u64::try_from(hosts.len()).unwrap_or(u64::MAX) {
        waiting.push("the first reconcile".to_string());
    }
    for host in hosts {
        let running = local_host(&local, &host).is_some_and(|local| local.postmaster().is_some());
        match host.phase() {
            Some(HostPhase::Ready) if host.status_is_current() && running => {}
            Some(HostPhase::Failed) if host.status_is_current() => {
                let message = host.status.as_ref().and_then(|status| status.message.clone()).unwrap_or_default();
                return Readiness::Failed { name: host.name_any(), message };
            }
            phase => waiting.push(format!("{} ({})", host.name_any(), phase.map_or("Pending", HostPhase::as_str))),
        }
    }
    if waiting.is_empty() { Readiness::AllReady } else { Readiness::Waiting(waiting) }
}

/// Starts the PostgreSQL of hosts that ran it when local mode last stopped: like an instance
/// booting, which the controllers (who look at hosts, not processes) do not do.
async fn boot_hosts(server: &MemoryApiServer, state: &StateDir) {
    let local = match hosts::scan(state.root()) {
        Ok(local) => local,
        Err(error) => {
            print_line(SUBJECT, &format!("error: {error}"));
            return;
        }
    };
    for host in stored_hosts(server) {
        let was_running = host.condition(condition::POSTGRES_READY).is_some_and(|ready| ready.status == "True");
        let Some(local) = local_host(&local, &host).filter(|local| was_running && local.postmaster().is_none()) else {
            continue;
        };
        let subject = format!("postgreshost/{}", host.name_any());
        match hosts::start(local).await {
            Ok(()) => print_line(&subject, "started PostgreSQL again (data kept from the previous run)"),
            Err(error) => print_line(&subject, &format!("error: {error}")),
        }
    }
}

/// Stops every host's PostgreSQL (fast shutdown; data kept).
async fn stop_hosts(state: &StateDir) -> Result<(), LocalModeError> {
    let mut first_error = None;
    for host in hosts::scan(state.root())? {
        match hosts::stop(&host).await {
            Ok(true) => print_line(&format!("postgreshost/{}", host.name), "stopped PostgreSQL (data kept)"),
            Ok(false) => {}
            Err(error) => {
                print_line(&format!("postgreshost/{}", host.name), &format!("error: {error}"));
                first_error.get_or_insert(error);
            }
        }
    }
    first_error.map_or(Ok(()), |error| Err(error.into()))
}

/// The PostgresHosts in the API.
fn stored_hosts(server: &MemoryApiServer) -> Vec<PostgresHost> {
    server
        .objects(&Kind::PostgresHost.resource_type())
        .into_iter()
        .filter_map(|object| serde_json::from_value(object).ok())
        .collect()
}

/// The local host directory of a PostgresHost (same namespace, name and uid).
fn local_host<'a>(local: &'a [LocalHost], host: &PostgresHost) -> Option<&'a LocalHost> {
    local.iter().find(|candidate| {
        Some(candidate.namespace.as_str()) == host.metadata.namespace.as_deref()
            && candidate.name == host.name_any()
            && candidate.uid.is_some()
            && candidate.uid == host.metadata.uid
    })
}
