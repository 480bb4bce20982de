//! The server handle: configuration, the `tower::Service` that `kube::Client` sends requests to,
//! and direct access for loaders and tests.

use std::{
    convert::Infallible,
    future::Future,
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, header::CONTENT_TYPE};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{
    discovery,
    error::{ApiError, Error},
    faults::Fault,
    handlers::{self, Outcome},
    persistence::{self, Persistence},
    registry::ResourceType,
    request::{self, Route},
    state::{State, Validator},
    store::ObjectKey,
    watch,
};

/// The body of the server's responses: a JSON document or a watch stream.
pub type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// How many changes are kept for watches from an older resourceVersion by default.
const DEFAULT_HISTORY_LIMIT: usize = 4096;

/// How often watches that allow bookmarks get one by default.
const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

/// An in-memory Kubernetes API server. Cheap to clone: clones share the same objects.
///
/// ```no_run
/// # async fn example() {
/// use pgec2_kube_memory::{MemoryApiServer, ResourceType};
/// let server = MemoryApiServer::new()
///     .with_resource(ResourceType::new("example.com", "v1", "widgets", "Widget", true).with_status_subresource());
/// let client = server.client(); // a kube::Client; needs a Tokio runtime
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryApiServer {
    shared: Arc<Shared>,
}

struct Shared {
    state: Arc<Mutex<State>>,
    settings: Mutex<Settings>,
    persistence: Option<Persistence>,
}

#[derive(Clone, Copy)]
struct Settings {
    bookmark_interval: Duration,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let (Some(persistence), Ok(state)) = (&self.persistence, self.state.lock())
            && let Err(error) = persistence.flush(&state)
        {
            tracing::error!(%error, "failed to write the API state on shutdown");
        }
    }
}

impl Default for MemoryApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryApiServer {
    /// A server with the built-in types (core/v1 and events.k8s.io/v1 Events,
    /// coordination.k8s.io/v1 Leases) and no objects, kept in memory only.
    pub fn new() -> Self {
        Self::build(State::new(DEFAULT_HISTORY_LIMIT), None)
    }

    /// A server whose objects and resourceVersion counter live in `dir`: loaded from its
    /// snapshot now (objects keep their uid and resourceVersion) and written back shortly after
    /// every change and when the last handle is dropped. Creates `dir` when missing.
    pub fn with_state_dir(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| Error::WriteState { path: dir.clone(), source })?;
        let mut state = State::new(DEFAULT_HISTORY_LIMIT);
        let mut loaded_version = 0;
        if let Some(snapshot) = persistence::load(&dir)? {
            loaded_version = snapshot.resource_version;
            state.store.restore(snapshot.resource_version, snapshot.objects);
        }
        Ok(Self::build(state, Some((dir, loaded_version))))
    }

    fn build(state: State, state_dir: Option<(PathBuf, u64)>) -> Self {
        let state = Arc::new(Mutex::new(state));
        let persistence = state_dir.map(|(dir, loaded)| Persistence::start(dir, &state, loaded));
        let settings = Mutex::new(Settings { bookmark_interval: DEFAULT_BOOKMARK_INTERVAL });
        Self { shared: Arc::new(Shared { state, settings, persistence }) }
    }

    /// The locked state.
    pub(crate) fn locked_state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held cannot leave the maps half-updated in a way later
        // requests cannot serve, so a poisoned lock is used as is.
        self.shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The registered type of objects with this `apiVersion` and `kind`.
    pub fn resource_of(&self, api_version: &str, kind: &str) -> Option<ResourceType> {
        self.locked_state().registry.by_kind(api_version, kind).cloned()
    }

    /// Serves a resource type (builder form of [`MemoryApiServer::register`]).
    pub fn with_resource(self, resource: ResourceType) -> Self {
        self.register(resource);
        self
    }

    /// Serves a resource type from now on.
    pub fn register(&self, resource: ResourceType) {
        self.locked_state().registry.register(resource);
    }

    /// Runs `validator` before every create and update of `resource`'s objects; an `Err`
    /// message refuses the write with 422 Invalid, like a CRD's validation rules.
    pub fn with_validator<F>(self, resource: &ResourceType, validator: F) -> Self
    where
        F: Fn(Option<&Value>, &Value) -> Result<(), String> + Send + Sync + 'static,
    {
        let validator: Validator = Arc::new(validator);
        self.locked_state().validators.insert(resource.key(), validator);
        self
    }

    /// Keeps this many changes for watches from an older resourceVersion (older → 410 Gone).
    pub fn with_history_limit(self, changes: usize) -> Self {
        self.locked_state().store.set_history_limit(changes);
        self
    }

    /// Sends a BOOKMARK this often on watches that allow bookmarks.
    pub fn with_bookmark_interval(self, interval: Duration) -> Self {
        if let Ok(mut settings) = self.shared.settings.lock() {
            settings.bookmark_interval = interval;
        }
        self
    }

    /// A `kube::Client` talking to this server, with `default` as its default namespace.
    /// Must be called within a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), "default")
    }

    /// Makes upcoming requests fail (see [`Fault`]).
    pub fn inject_fault(&self, fault: Fault) {
        self.locked_state().faults.inject(fault);
    }

    /// How many injected failures have not happened yet.
    pub fn pending_faults(&self) -> u32 {
        self.locked_state().faults.pending()
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.locked_state().store.resource_version()
    }

    /// One stored object (`namespace` `None` for cluster-scoped types).
    pub fn get_object(&self, resource: &ResourceType, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = ObjectKey {
            type_key: resource.key(),
            namespace: namespace.unwrap_or_default().to_owned(),
            name: name.to_owned(),
        };
        self.locked_state().store.get(&key).cloned()
    }

    /// All stored objects of a type, ordered by namespace and name.
    pub fn objects(&self, resource: &ResourceType) -> Vec<Value> {
        self.locked_state().store.list(&resource.key(), None).into_iter().map(|(_, object)| object.clone()).collect()
    }

    /// Writes the state snapshot now if anything changed (no-op without a state directory).
    pub fn flush(&self) -> Result<(), Error> {
        match &self.shared.persistence {
            Some(persistence) => persistence.flush(&self.locked_state()),
            None => Ok(()),
        }
    }

    /// Serves a request given as parts and body, as the `Service` does.
    pub(crate) fn serve_parts(&self, parts: &http::request::Parts, body: Vec<u8>) -> Result<Answer, ApiError> {
        let mut state = self.locked_state();
        let request = match request::route(&state.registry, parts, body)? {
            Route::Discovery(segments) => {
                return Ok(Answer::Json(200, discovery::respond(&state.registry, &segments)?));
            }
            Route::Resource(request) => request,
        };
        match handlers::handle(&mut state, &request)? {
            Outcome::Json(code, body) => Ok(Answer::Json(code, body)),
            Outcome::Watch(plan) => Ok(Answer::Watch(plan, state.store.oldest_watchable())),
        }
    }

    async fn serve(self, request: Request<kube::client::Body>) -> Response<ResponseBody> {
        let (parts, body) = request.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes().to_vec(),
            Err(error) => {
                return error_response(&ApiError::bad_request(format!("failed to read the request body: {error}")));
            }
        };
        match self.serve_parts(&parts, body) {
            Ok(Answer::Json(code, body)) => json_response(code, &body),
            Ok(Answer::Watch(plan, oldest)) => self.watch_response(*plan, oldest),
            Err(error) => error_response(&error),
        }
    }

    fn watch_response(&self, plan: watch::WatchPlan, oldest: u64) -> Response<ResponseBody> {
        let interval =
            self.shared.settings.lock().map(|settings| settings.bookmark_interval).unwrap_or(DEFAULT_BOOKMARK_INTERVAL);
        let (lines, receiver) = mpsc::channel::<Bytes>(64);
        tokio::spawn(watch::run(plan, oldest, interval, lines));
        let frames = futures::stream::unfold(receiver, |mut receiver| async move {
            let line = receiver.recv().await?;
            Some((Ok::<_, Infallible>(http_body::Frame::data(line)), receiver))
        });
        let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
        response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        response
    }
}

/// A served request's answer before it becomes an HTTP response.
pub(crate) enum Answer {
    Json(u16, Value),
    Watch(Box<watch::WatchPlan>, u64),
}

fn json_response(code: u16, body: &Value) -> Response<ResponseBody> {
    let bytes = Bytes::from(body.to_string());
    let mut response = Response::new(Full::new(bytes).boxed_unsync());
    *response.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn error_response(error: &ApiError) -> Response<ResponseBody> {
    json_response(error.code, &error.to_status())
}

impl tower::Service<Request<kube::client::Body>> for MemoryApiServer {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        let server = self.clone();
        Box::pin(async move { Ok(server.serve(request).await) })
    }
}
