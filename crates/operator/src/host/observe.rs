//! Observe: what the cloud has for the host (instance, layout) and the setup it should run.

use pgec2_api::PostgresHost;

use super::error::Error;
use super::render::{self, Policies, RenderError, Setup};
use super::validate::Invalid;
use crate::cloud::{HostInstance, HostLayout, HostRef};
use crate::context::Context;

/// The host as the cloud sees it.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub instance: Option<HostInstance>,
    pub layout: Option<HostLayout>,
    /// The wanted setup; known once the instance exists.
    pub setup: Option<Setup>,
}

/// The cloud's identity of a PostgresHost.
pub fn host_ref(host: &PostgresHost) -> Result<HostRef, Error> {
    Ok(HostRef {
        namespace: host.metadata.namespace.clone().ok_or(Error::MissingMetadata("namespace"))?,
        name: host.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?,
        uid: host.metadata.uid.clone().ok_or(Error::MissingMetadata("uid"))?,
    })
}

/// Reads the instance and renders the wanted setup. A setup that cannot be rendered from the
/// spec is `Err(Invalid)`; cloud faults are errors.
pub async fn observe(
    ctx: &Context,
    host: &PostgresHost,
    policies: &Policies,
) -> Result<Result<Observation, Invalid>, Error> {
    let reference = host_ref(host)?;
    let cloud_error = |source| Error::Cloud { host: host.qualified_name(), source };
    let Some(instance) = ctx.cloud.find_host(&reference).await.map_err(cloud_error)? else {
        return Ok(Ok(Observation::default()));
    };
    let layout = ctx.cloud.host_layout(&reference, &instance).await.map_err(cloud_error)?;
    let setup = match render::setup(host, policies, &instance, &layout, ctx.config.agent_download.as_ref()) {
        Ok(setup) => setup,
        Err(RenderError::NoAgentDownload) => {
            return Err(Error::Render { host: host.qualified_name(), source: RenderError::NoAgentDownload });
        }
        Err(error) => return Ok(Err(Invalid { reason: "InvalidSpec", message: error.to_string() })),
    };
    Ok(Ok(Observation { instance: Some(instance), layout: Some(layout), setup: Some(setup) }))
}
