//! `pgec2-operator local get`: the resources of a state directory and their status, read from
//! the API state `local run` keeps there (no running operator needed).

use std::io::Write;

use k8s_openapi::jiff::Timestamp;
use pgec2_kube_memory::MemoryApiServer;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::kinds::{self, Kind};
use super::table::{self, Listing};
use super::{LocalModeError, StateDir};
use crate::cli::{LocalGetArgs, OutputFormat};

/// Prints the resources asked for as a table or as JSON.
pub fn get(args: LocalGetArgs) -> Result<(), LocalModeError> {
    let state = StateDir::resolve(args.state.state_dir.clone());
    if !state.has_api_state() {
        return Err(LocalModeError::NoState { path: state.root().to_path_buf() });
    }
    let server = kinds::api_server(&state.api_dir())?;
    let kinds: Vec<Kind> = args.kind.map_or_else(|| Kind::ALL.to_vec(), |kind| vec![kind]);
    let text = match (&args.name, args.kind, args.output) {
        (Some(name), Some(kind), output) => {
            let object = server.get_object(&kind.resource_type(), Some(&args.namespace), name).ok_or_else(|| {
                LocalModeError::NotFound {
                    kind,
                    namespace: args.namespace.clone(),
                    name: name.clone(),
                    state: state.root().to_path_buf(),
                }
            })?;
            match output {
                OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&object)?),
                OutputFormat::Table => table_of_objects(&server, &[kind], |found| found == &object),
            }
        }
        (_, _, OutputFormat::Json) => {
            let items: Vec<Value> = kinds.iter().flat_map(|kind| server.objects(&kind.resource_type())).collect();
            let list = json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items});
            format!("{}\n", serde_json::to_string_pretty(&list)?)
        }
        (_, _, OutputFormat::Table) => table_of(&server, &kinds),
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

/// The table of every object of `kinds`.
pub fn table_of(server: &MemoryApiServer, kinds: &[Kind]) -> String {
    table_of_objects(server, kinds, |_| true)
}

/// The table of the objects of `kinds` that `keep` selects. Every policy is read (a host's
/// last backup may come from its policy's status) but only selected ones are shown.
fn table_of_objects(server: &MemoryApiServer, kinds: &[Kind], keep: impl Fn(&Value) -> bool) -> String {
    let hosts = typed(server, Kind::PostgresHost, &keep);
    let all_policies = typed(server, Kind::BackupPolicy, &|_: &Value| true);
    let policies = typed(server, Kind::BackupPolicy, &keep);
    let listing = Listing { hosts: &hosts, policies: &all_policies, kinds, now: Timestamp::now() };
    if kinds == [Kind::BackupPolicy] {
        return table::render(&Listing { policies: &policies, ..listing });
    }
    table::render(&listing)
}

fn typed<K: DeserializeOwned>(server: &MemoryApiServer, kind: Kind, keep: &impl Fn(&Value) -> bool) -> Vec<K> {
    server
        .objects(&kind.resource_type())
        .into_iter()
        .filter(|object| keep(object))
        .filter_map(|object| serde_json::from_value(object).ok())
        .collect()
}
