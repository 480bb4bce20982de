//! A moto server (S3, EC2, SSM APIs) on a free loopback port, killed on drop.
//!
//! moto keeps its state in memory only: never restart it in the middle of a test.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::scratch::free_port;
use crate::{HarnessError, Result, io_error};

/// Credentials moto accepts (any will do); set them in the environment of what talks to it.
pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";
pub const REGION: &str = "us-east-1";

#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    pub port: u16,
}

impl MotoServer {
    /// Starts `moto_server` (or `$MOTO_SERVER`) and waits until it accepts connections.
    pub fn start() -> Result<Self> {
        let port = free_port()?;
        let program = std::env::var("MOTO_SERVER").unwrap_or_else(|_| "moto_server".to_string());
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io_error(format!("start {program} (pip install 'moto[server]')")))?;
        let server = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(HarnessError::Setup(format!("moto_server did not listen on port {port} within 30s")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Environment variables that point AWS SDKs and the agent at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
            ("PGEC2_S3_ENDPOINT", self.endpoint()),
        ]
    }

    /// An AWS SDK config for this server (static test credentials, fixed region).
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let credentials = aws_credential_types::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "moto");
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(credentials)
            .load()
            .await
    }

    /// Creates a bucket (path-style addressing).
    /// Creates `bucket` with S3 Object Lock enabled (which turns on versioning).
    pub async fn create_locked_bucket(&self, bucket: &str) -> Result<()> {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk_config().await).force_path_style(true).build();
        let client = aws_sdk_s3::Client::from_conf(config);
        client
            .create_bucket()
            .bucket(bucket)
            .object_lock_enabled_for_bucket(true)
            .send()
            .await
            .map_err(|error| HarnessError::Setup(format!("create locked bucket {bucket}: {error:?}")))?;
        Ok(())
    }

    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk_config().await).force_path_style(true).build();
        let client = aws_sdk_s3::Client::from_conf(config);
        client
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|error| HarnessError::Setup(format!("create bucket {bucket}: {error:?}")))?;
        Ok(())
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
