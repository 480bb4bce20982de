//! Helpers shared by the storage test binaries.

// Each test binary uses a subset of these helpers.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use pgec2_testkit::MotoServer;

/// The moto server of this test binary: started by the first test that needs it and stopped
/// when the last running one is done (a static would never be dropped, leaving the process
/// behind). Every test uses its own bucket, so a restart between tests loses nothing.
pub fn moto() -> Arc<MotoServer> {
    static SHARED: Mutex<Weak<MotoServer>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(server) = shared.upgrade() {
        return server;
    }
    let server = Arc::new(MotoServer::start().expect("start moto_server"));
    *shared = Arc::downgrade(&server);
    server
}

/// A bucket name not used before by this test binary.
pub fn fresh_bucket(purpose: &str) -> String {
    static BUCKETS: AtomicUsize = AtomicUsize::new(0);
    format!("{purpose}-{}", BUCKETS.fetch_add(1, Ordering::Relaxed))
}

/// An SDK client talking to `server` directly, to inspect what a store wrote.
pub async fn raw_client(server: &MotoServer) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(&server.sdk_config().await).force_path_style(true).build();
    aws_sdk_s3::Client::from_conf(config)
}
