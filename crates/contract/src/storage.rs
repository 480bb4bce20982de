//! How an archive's objects are protected at rest, spelled once for the BackupPolicy CRD
//! (`spec.storage.s3.serverSideEncryption`), the HostSpec the operator sends, the agent's
//! configuration file (`[storage] sse`) and the S3 backend.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// S3 server-side encryption.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
// The field's description is the one users see; an empty one here keeps it.
#[cfg_attr(feature = "schema", schemars(description = ""))]
pub enum ServerSideEncryption {
    /// S3-managed keys (SSE-S3).
    #[serde(rename = "AES256")]
    Aes256,
    /// AWS KMS keys (SSE-KMS).
    #[serde(rename = "aws:kms")]
    AwsKms,
}

impl ServerSideEncryption {
    /// The value S3's `x-amz-server-side-encryption` header and the configuration take.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerSideEncryption::Aes256 => "AES256",
            ServerSideEncryption::AwsKms => "aws:kms",
        }
    }
}

impl fmt::Display for ServerSideEncryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ServerSideEncryption {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "AES256" => Ok(ServerSideEncryption::Aes256),
            "aws:kms" => Ok(ServerSideEncryption::AwsKms),
            _ => Err("expected AES256 or aws:kms".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_encryption_reads_back_from_its_text_and_its_json() {
        for sse in [ServerSideEncryption::Aes256, ServerSideEncryption::AwsKms] {
            assert_eq!(sse.to_string().parse::<ServerSideEncryption>(), Ok(sse));
            let json = serde_json::to_value(sse).expect("json");
            assert_eq!(json, serde_json::Value::from(sse.as_str()));
            assert_eq!(serde_json::from_value::<ServerSideEncryption>(json).expect("parse"), sse);
        }
        assert!("aws:KMS".parse::<ServerSideEncryption>().is_err());
    }
}
